"""What every I-model shares besides the attention: conversion from its source model, freezing, checkpoint checks and
the typed outputs around the parents' forwards (architecture.md decisions 3 and 10).

Imports only torch, transformers and this folder, so that it travels with the remote code of saved checkpoints.
"""

import inspect
import os
import re
import sys
from functools import wraps

import torch
from torch import nn
from transformers import AutoConfig, PretrainedConfig, PreTrainedModel
from transformers.utils import logging
from transformers.utils.generic import TransformersKwargs

from .interaction_attention import INTERACTION_KERNEL, GatedControlNetwork, QueryGate, ScalarGate
from .interaction_config import known_keys
from .name_or_path import resolve_name_or_path
from .output_recording import RECORDING, captures_outputs, install_capturing_hooks, watch_submodules
from .triton_attention import triton_is_available

logger = logging.get_logger(__name__)

# Parameter-name fragments of what LFI adds to a model; everything else is the original backbone.
INTERACTION_PARAMETER_KEYS = ("interaction_q_proj.", "gate.")
# The output fields an I-model adds to its parent's output.
INTERACTION_FIELDS = ("interaction_maps", "gates", "interaction_mask", "original_attentions", "interaction_attentions")
# The keyword arguments `output_interactions=True` sends down to the interaction attentions and their recorders.
INTERACTION_FLAGS = ("output_interactions", "output_interaction_maps", "output_gates")
# and, with `output_attentions` too, to the recorders of both attention maps (eager attention only)
ATTENTION_MAP_FLAGS = ("output_original_attentions", "output_interaction_attentions")
# Source-config entries that describe the checkpoint rather than the architecture.
_SOURCE_ONLY_KEYS = ("model_type", "architectures", "transformers_version", "auto_map", "dtype")
# `from_pretrained` arguments that locate a checkpoint's files.
_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "proxies", "revision", "subfolder", "token")


def is_interaction_parameter(name: str) -> bool:
    """Whether a parameter name belongs to the interaction queries or the gated control network."""
    return any(key in name for key in INTERACTION_PARAMETER_KEYS)


def is_gate_parameter(name: str) -> bool:
    """Whether a parameter name belongs to a layer's gate (`gate_learning_rate_multiplier` applies to these)."""
    return ".gate." in name


def load_source_weights(model: nn.Module, state_dict: dict, newly_initialised: tuple[str, ...] = ()) -> None:
    """Copy a source model's weights into `model`, refusing anything but the expected differences.

    `newly_initialised` lists name prefixes (e.g. a replaced classifier) that may be absent from `state_dict`.
    """
    target_shapes = {name: tensor.shape for name, tensor in model.state_dict().items()}
    mismatched = [
        f"{name}: checkpoint {tuple(tensor.shape)} vs model {tuple(target_shapes[name])}"
        for name, tensor in state_dict.items()
        if name in target_shapes and tensor.shape != target_shapes[name]
    ]
    if mismatched:
        raise ValueError(f"Mismatched checkpoint: {len(mismatched)} weights differ in shape, e.g. {mismatched[:3]}.")
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    if unexpected:
        raise ValueError(
            f"Mismatched checkpoint: the source has weights the converted model has no place for: {unexpected[:5]}."
        )
    absent = [n for n in missing if not is_interaction_parameter(n) and not n.startswith(newly_initialised)]
    if absent:
        raise ValueError(f"Mismatched checkpoint: the source lacks weights the converted model needs: {absent[:5]}.")


@torch.no_grad()
def init_interaction_queries_from_original(model: nn.Module) -> None:
    """Start every interaction query projection P'_q as a copy of its layer's original P_q (paper section 1)."""
    for module in model.modules():
        if hasattr(module, "interaction_q_proj"):
            module.interaction_q_proj.weight.copy_(module.q_proj.weight)
            if module.interaction_q_proj.bias is not None:
                module.interaction_q_proj.bias.copy_(module.q_proj.bias)


def freeze_original_parameters(model: nn.Module, trainable_prefixes: tuple[str, ...] = ()) -> None:
    """Train only interaction queries, gates and the task heads named by `trainable_prefixes` (section 5.1.2)."""
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(is_interaction_parameter(name) or name.startswith(trainable_prefixes))


def _rename(name: str, renames: dict[str, str | None]) -> str | None:
    """The converted model's name for a source weight: the first matching prefix is replaced (None drops it)."""
    for old, new in renames.items():
        if name.startswith(old):
            return None if new is None else new + name[len(old) :]
    return None


def convert_to_interaction_model(cls, source, config_overrides: dict, converter: str):
    """Convert a pretrained source model (object, local folder or Hub id, see `resolve_name_or_path`) into its
    interaction twin `cls` (architecture.md decision 3; paper section 5.1.2). One algorithm for every I-model,
    described by `cls`:

    - `cls._source_classes`: accepted source class -> how its weight names map into `cls` (prefix renames, first
      match wins, `None` drops), and `cls._source_model_types`: checkpoint `model_type` -> the classes that load it
      (the one the checkpoint's `architectures` names, else the first);
    - `cls._source_config(source_config)`: the values of `cls.config_class` taken from the source configuration;
    - `cls._head_prefixes`: the task heads, each reused when the source has it and the same `num_labels`, freshly
      initialised otherwise (e.g. the mask head of a segmentation model converted from a detector).

    Every source weight is copied, each P'_q starts as a copy of P_q and the gates at g1 + g2 = 1, so the converted
    model's outputs equal the source's at step 0. `freeze_backbone` defaults to True; `config_overrides` go to the
    configuration (e.g. `num_labels=200`, `interaction_layers=[...]`).
    """
    accepted = " or ".join(c.__name__ for c in cls._source_classes)
    if isinstance(source, (str, os.PathLike)):
        source = resolve_name_or_path(source)
        source_config = AutoConfig.from_pretrained(source)
        source_type = source_config.model_type
        if source_type not in cls._source_model_types:
            expected = " or ".join(repr(t) for t in cls._source_model_types)
            raise ValueError(
                f"{converter} expects a {cls._source_name} checkpoint (model_type {expected}), got model_type "
                f"{source_type!r} at {source}."
            )
        candidates = cls._source_model_types[source_type]
        named = [c for c in candidates if c.__name__ in (source_config.architectures or [])]
        source = (named or candidates)[0].from_pretrained(source)
    if type(source) not in cls._source_classes:
        raise ValueError(f"{converter} expects a {accepted}, got {type(source).__name__}.")

    values = {k: v for k, v in cls._source_config(source.config).items() if k not in _SOURCE_ONLY_KEYS}
    # transformers keeps any extra attribute of a configuration (a stray key of a converted checkpoint); the I-model's
    # configuration refuses keys it does not know, so those of the source are left out, with a warning
    extra = sorted(set(values) - known_keys(cls.config_class))
    if extra:
        logger.warning(
            "%s: the %s configuration carries attributes %s that %s does not know; they are not carried over.",
            converter,
            cls._source_name,
            extra,
            cls.config_class.__name__,
        )
        values = {k: v for k, v in values.items() if k not in extra}
    if "num_labels" in config_overrides or "id2label" in config_overrides:
        values.pop("id2label", None)
        values.pop("label2id", None)
    config = cls.config_class(**{**values, "freeze_backbone": True, **config_overrides})
    # a source asked for eager attention (or the kernel) keeps it; the library default (sdpa) becomes the I-model's own
    # default (`InteractionModelMixin.get_correct_attn_implementation`); with sub-configs (DETR's backbone) each model
    # resolves its own
    if not config.sub_configs and source.config._attn_implementation != "sdpa":
        config._attn_implementation = source.config._attn_implementation
    config._name_or_path = source.config._name_or_path  # the base model, for cards

    model = cls(config)
    renames = cls._source_classes[type(source)]
    state_dict = {}
    for name, tensor in source.state_dict().items():
        if (new_name := _rename(name, renames)) is not None:
            state_dict[new_name] = tensor
    same_labels = source.config.num_labels == config.num_labels
    target_names = list(model.state_dict())
    fresh_heads = tuple(
        prefix
        for prefix in cls._head_prefixes
        if not same_labels or not all(n in state_dict for n in target_names if n.startswith(prefix))
    )
    state_dict = {n: t for n, t in state_dict.items() if not n.startswith(fresh_heads)}
    try:
        load_source_weights(model, state_dict, newly_initialised=fresh_heads)
    except ValueError as error:  # most often an override that changes the architecture: name it
        changed = {
            key: f"{values[key]!r} -> {value!r}"
            for key, value in config_overrides.items()
            if key in values and values[key] != value and key not in ("num_labels", "id2label", "label2id")
        }
        if not changed:
            raise
        raise ValueError(
            f"{converter}: the overrides {changed} change the architecture of the source {cls._source_name}, whose "
            f"weights then do not fit ({error}) Convert with the source's architecture, or build the model from a "
            "configuration and train it from scratch."
        ) from error
    init_interaction_queries_from_original(model)
    return model.to(dtype=next(source.parameters()).dtype)


def check_pixel_values(pixel_values, config, inputs: dict) -> None:
    """`pixel_values` must be a float tensor (batch, config.num_channels, height, width) of finite values, and, where
    the parent forward does not interpolate its position embeddings (`interpolate_pos_encoding` falsy), of the
    configured image size. The parents cast integer pixels and pass NaN on to their logits without a word."""
    if not isinstance(pixel_values, torch.Tensor):
        raise ValueError(
            f"pixel_values must be a torch.Tensor, got {type(pixel_values).__name__} (the image processor's "
            "return_tensors='pt' gives one)."
        )
    if pixel_values.ndim != 4 or not len(pixel_values):
        raise ValueError(
            f"pixel_values must be (batch, channels, height, width) with at least one image, got shape "
            f"{tuple(pixel_values.shape)}."
        )
    if not pixel_values.is_floating_point():
        raise ValueError(
            f"pixel_values are {pixel_values.dtype}: the model reads normalised float images (the image processor's "
            "output), not raw pixel values."
        )
    channels = getattr(config, "num_channels", None)
    if channels is not None and pixel_values.shape[1] != channels:
        raise ValueError(
            f"pixel_values have {pixel_values.shape[1]} channel(s); the model takes config.num_channels={channels} "
            f"(shape {tuple(pixel_values.shape)} must be (batch, {channels}, height, width))."
        )
    height, width = pixel_values.shape[-2:]
    patch = getattr(config, "patch_size", None)
    if patch is not None:
        patch = patch if isinstance(patch, int) else patch[0]
        if height % patch or width % patch:
            raise ValueError(f"Image size {height}x{width} is not divisible by the patch size {patch}.")
    size = getattr(config, "image_size", None)
    if "interpolate_pos_encoding" in inputs and not inputs["interpolate_pos_encoding"] and size is not None:
        size = (size, size) if isinstance(size, int) else tuple(size)
        if (height, width) != size:
            raise ValueError(
                f"Image size {height}x{width} differs from the model's {size[0]}x{size[1]} (config.image_size): resize "
                "the images, or pass interpolate_pos_encoding=True to interpolate the position embeddings."
            )
    # (meta tensors, as in `flop_report`, have no values to check)
    if not torch.compiler.is_compiling() and not pixel_values.is_meta and not pixel_values.isfinite().all():
        bad = sorted({int(i) for i in (~pixel_values.isfinite()).flatten(1).any(1).nonzero().flatten()})
        raise ValueError(f"pixel_values have NaN or infinite values (images {bad[:10]} of the batch).")


def check_class_labels(labels: torch.Tensor, num_labels: int, batch_size: int | None) -> None:
    """Classification labels: one per image; class ids in [0, num_labels), or float targets of shape (batch,
    num_labels) for multi-label classification (one value per image for regression, num_labels=1)."""
    if batch_size is not None and (labels.ndim == 0 or len(labels) != batch_size):
        raise ValueError(
            f"labels has shape {tuple(labels.shape)} for a batch of {batch_size} images: give one per image."
        )
    if labels.is_floating_point():
        if num_labels > 1 and tuple(labels.shape[1:]) != (num_labels,):
            raise ValueError(
                f"labels are {labels.dtype} of shape {tuple(labels.shape)}: class ids must be integers (cast them), and "
                f"float targets are multi-label, of shape (batch, num_labels={num_labels})."
            )
        return
    if labels.numel() and not torch.compiler.is_compiling() and (labels.min() < 0 or labels.max() >= num_labels):
        raise ValueError(
            f"labels must lie in [0, {num_labels}), got values from {labels.min().item()} to {labels.max().item()}."
        )


def _keyword_arguments(signature: inspect.Signature) -> set[str]:
    """The keyword arguments an I-model's forward accepts: the parent forward's own, transformers' common ones
    (`TransformersKwargs`) and the interaction flags."""
    named = {
        name
        for name, parameter in signature.parameters.items()
        if name != "self" and parameter.kind not in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL)
    }
    return named | set(TransformersKwargs.__annotations__) | {"return_dict", *INTERACTION_FLAGS, *ATTENTION_MAP_FLAGS}


def _unknown_arguments_error(model, parent_forward, unknown: list[str], named: list[str]) -> TypeError:
    parent = parent_forward.__qualname__.split(".")[0]
    hint = ""
    if "attention_mask" in unknown:
        hint = (
            " DETR-family models mark padded pixels with pixel_mask (1 = real pixel)."
            if "pixel_mask" in named
            else f" {parent} attends to every patch: it takes no attention_mask."
        )
    return TypeError(
        f"{type(model).__name__}.forward() got unexpected keyword arguments {unknown}: it takes {named} (as "
        f"{parent}), transformers' output_attentions / output_hidden_states and output_interactions.{hint}"
    )


def forward_with_interactions(parent_forward, output_class):
    """The parent's `forward`, unchanged, plus `output_interactions`: the returned output is `output_class` (the
    parent's output type with `interaction_maps`, `gates` and, for dense models, `interaction_mask`).

    `output_interactions=True` travels down with the other keyword arguments to the interaction attentions (which
    then publish their student maps and gates) and turns on their recording (`output_interaction_maps`,
    `output_gates`, as `output_attentions` does for attentions); with `output_attentions` too, C_VFM and C_AGT are
    recorded (`original_attentions`, `interaction_attentions`) where the attention implementation materialises them
    ("eager"). Where the parent forward rebuilds the output of a submodel and drops those fields, they are read from
    that submodel's output (`_interaction_sources`, kept by hooks installed with the model: `torch.compile(
    fullgraph=True)` traces this forward).
    """
    signature = inspect.signature(parent_forward)
    parameters = list(signature.parameters.values())
    flag = inspect.Parameter(
        "output_interactions", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=bool | None
    )
    last = -1 if parameters[-1].kind is inspect.Parameter.VAR_KEYWORD else len(parameters)
    parameters.insert(last, flag)
    accepted = _keyword_arguments(signature)
    named = [p.name for p in parameters if p.name != "self" and p.kind is not inspect.Parameter.VAR_KEYWORD]
    # the names of positional arguments after `self` (a plain zip: torch.compile cannot trace `Signature.bind`)
    positional = [p.name for p in parameters[1:] if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    # the parent's defaults, for the checks that read them (`interpolate_pos_encoding`)
    defaults = {p.name: p.default for p in parameters[1:] if p.default is not inspect.Parameter.empty}

    @wraps(parent_forward)
    def forward(self, *args, output_interactions: bool | None = None, **kwargs):
        unknown = sorted(set(kwargs) - accepted)
        if unknown:  # the parent would pass them on to its layers, which ignore them or fail deep inside
            raise _unknown_arguments_error(self, parent_forward, unknown, named)
        return_dict = kwargs.pop("return_dict", None)
        return_dict = self.config.return_dict if return_dict is None else return_dict
        inputs = {**defaults, **dict(zip(positional, args)), **kwargs}
        self._check_inputs(inputs)
        seen = self._source_outputs
        if output_interactions:
            kwargs.update(dict.fromkeys(INTERACTION_FLAGS, True))
            if kwargs.get("output_attentions", self.config.output_attentions):
                kwargs.update(dict.fromkeys(ATTENTION_MAP_FLAGS, True))
            seen[RECORDING] = True
        try:
            outputs = parent_forward(self, *args, return_dict=True, **kwargs)
            fields = dict(outputs)
            if output_interactions:
                fields.update(self._interaction_fields(fields, inputs, seen))
        finally:
            seen.clear()
        outputs = output_class(**fields)
        return outputs if return_dict else outputs.to_tuple()

    forward.__signature__ = signature.replace(parameters=parameters, return_annotation=output_class)
    return forward


class InteractionModelMixin:
    """What every I-model's `PreTrainedModel` shares: building the interaction attentions, freezing the original
    network, loading across heads (refusing checkpoints whose backbone or interaction weights disagree with their
    config), conversion and typed outputs. Put it before the library's pretrained-model class in the bases.

    A task model's `base_model_prefix` names where its base model sits (dotted if deeper than one attribute).
    Subclasses set `_head_prefixes` (the task heads, trainable besides the interaction parameters), `_source_name`
    and `_converter` (the model they extend and the conversion to point users at), the conversion tables used by
    `convert_to_interaction_model`, and `_interaction_sources` where the parent forward drops the interaction fields
    of a submodel's output.
    """

    # Attention implementations (`config._attn_implementation`): "eager" materialises the maps (`output_attentions`),
    # "sdpa" runs the fused and blockwise paths, `INTERACTION_KERNEL` the Triton kernel; interaction layers have no
    # flash-attention or flex-attention form, and no attention backend for TGI/vLLM.
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_flex_attn = False
    _supports_attention_backend = False
    _can_compile_fullgraph = True

    _head_prefixes: tuple[str, ...] = ()
    _source_name = "source"
    _converter = "from_pretrained"
    _source_classes: dict = {}
    _source_model_types: dict = {}
    _interaction_sources: tuple[str, ...] = ()

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, (GatedControlNetwork, QueryGate, ScalarGate)):
            module.reset_parameters()

    def get_correct_attn_implementation(self, requested_attention: str | None, is_init_check: bool = False) -> str:
        """transformers' resolution, with the Triton kernel (`INTERACTION_KERNEL`) as the default where CUDA and triton
        are present, and a clear error when it is asked for without triton."""
        if requested_attention == INTERACTION_KERNEL and not triton_is_available():
            raise ValueError(
                f"attn_implementation={INTERACTION_KERNEL!r} needs triton (it comes with CUDA builds of torch; "
                "`pip install triton`). Use 'sdpa' (blockwise and fused attention) or 'eager'."
            )
        if requested_attention is None and torch.cuda.is_available() and triton_is_available():
            requested_attention = INTERACTION_KERNEL
        return super().get_correct_attn_implementation(requested_attention, is_init_check)

    def post_init(self):
        # the first place the interaction fields are read (remote code loads the configuration class a second time,
        # so its fields, not its class, tell an I-model's configuration)
        if not hasattr(self.config, "interaction_layer_indices"):
            raise ValueError(
                f"{type(self).__name__} needs an {self.config_class.__name__}, got a {type(self.config).__name__}: build "
                f"one (it takes every field of the source's configuration, plus the interaction fields), or convert "
                f"a pretrained {self._source_name} with `{self._converter}(...)`."
            )
        super().post_init()
        # the recording hooks, installed with the model (not by the first forward) so that torch.compile traces them
        if captures_outputs(type(self).forward):
            install_capturing_hooks(self)
        self._source_outputs = watch_submodules(self, self._interaction_sources)
        if self.config.freeze_backbone:
            self.freeze_backbone()

    def _use_interaction_attention(self, layers: nn.ModuleList, name: str, attention_class: type) -> None:
        """Give the configured layers (`interaction_layer_indices`) an interaction attention in place of `name`."""
        for index in self.config.interaction_layer_indices:
            setattr(layers[index], name, attention_class(self.config))

    def freeze_backbone(self) -> None:
        """Train only interaction queries, gated control networks and task heads; freeze the original network."""
        freeze_original_parameters(self, self._head_prefixes)

    @classmethod
    def baseline_model(cls, config):
        """The plain source model this I-model extends, built for `config` (a run's baseline; parameter and FLOP
        counts)."""
        return next(iter(cls._source_classes))(config.base_config())

    @classmethod
    def _source_config(cls, source_config) -> dict:
        return source_config.to_dict()

    def _check_inputs(self, inputs: dict) -> None:
        """Clear errors for inputs the parent forward would mis-handle silently or with an obscure message. `inputs`
        holds every argument of the parent forward (defaults included). Checks that read values (NaN pixels, label
        ranges) are skipped while `torch.compile` traces the model."""
        pixel_values, labels = inputs.get("pixel_values"), inputs.get("labels")
        if pixel_values is not None:
            check_pixel_values(pixel_values, self.config, inputs)
        if isinstance(labels, torch.Tensor):
            check_class_labels(labels, self.config.num_labels, None if pixel_values is None else len(pixel_values))

    def _interaction_grid(self, inputs: dict, seen: dict) -> tuple[int, int]:
        """The grid of the student maps: the patch grid of `pixel_values` for the vision transformers."""
        patch = self.config.patch_size
        patch_height, patch_width = (patch, patch) if isinstance(patch, int) else patch
        height, width = inputs["pixel_values"].shape[-2:]
        return height // patch_height, width // patch_width

    def _interaction_fields(self, outputs: dict, inputs: dict, seen: dict) -> dict:
        """The interaction fields of this forward's output: recorded here, or read from a submodel's output; student
        maps recorded flat (`[batch, tokens]`) are given their grid."""
        if self._interaction_sources:
            outputs = seen.get(self._interaction_sources[0]) or {}
        fields = {key: outputs[key] for key in INTERACTION_FIELDS if outputs.get(key) is not None}
        maps = fields.get("interaction_maps")
        if maps and maps[0].ndim == 2:
            grid = self._interaction_grid(inputs, seen)
            fields["interaction_maps"] = tuple(m.unflatten(-1, grid) for m in maps)
        return fields

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, output_loading_info: bool = False, **kwargs):
        """`PreTrainedModel.from_pretrained`, across heads as transformers loads its models (a base model from a task
        checkpoint drops the head, a task model from a base checkpoint initialises one, both in transformers' load
        report), refusing checkpoints whose backbone or interaction weights do not fit the configuration."""
        renames = cls._base_model_renames(pretrained_model_name_or_path, kwargs)
        key_mapping = {**(kwargs.pop("key_mapping", None) or {}), **renames}
        ignore_mismatched_sizes = kwargs.pop("ignore_mismatched_sizes", False)
        # mis-shaped weights come back in the report instead of a RuntimeError, so that the check below can name them
        model, info = super().from_pretrained(
            pretrained_model_name_or_path,
            *args,
            output_loading_info=True,
            key_mapping=key_mapping or None,
            ignore_mismatched_sizes=True,
            **kwargs,
        )
        check_loaded_weights(model, info, pretrained_model_name_or_path, ignore_mismatched_sizes)
        if renames:  # transformers saves in the layout a model was loaded from; these renames are no layout of its own
            used = getattr(model, "_weight_conversions", [])
            model._weight_conversions = [c for c in used if c.source_patterns[0] not in renames]
        # loading replaces the parameters, and with them the requires_grad flags set in __init__
        if model.config.freeze_backbone:
            model.freeze_backbone()
        return (model, info) if output_loading_info else model

    @classmethod
    def _base_model_renames(cls, pretrained_model_name_or_path, kwargs: dict) -> dict[str, str]:
        """Key renames (`key_mapping`) for a checkpoint saved from an I-model whose base model transformers cannot
        reach from this class: it strips or adds this class's `base_model_prefix` only, so I-DETR segmentation's
        `detr.model.` is stripped here, and transformers then adds this class's prefix where it needs one.

        The class a checkpoint was saved from is the one its config's `architectures` names."""
        module = sys.modules[cls.__module__]
        elsewhere = {
            name: value.base_model_prefix
            for name, value in vars(module).items()
            if isinstance(value, type)
            and issubclass(value, InteractionModelMixin)
            and issubclass(value, PreTrainedModel)
            and value.base_model_prefix not in ("", cls.base_model_prefix)
        }
        if not elsewhere:
            return {}
        config = kwargs.get("config")
        if not isinstance(config, PretrainedConfig):
            hub_kwargs = {name: kwargs[name] for name in _HUB_KWARGS if name in kwargs}
            config = cls.config_class.from_pretrained(config or pretrained_model_name_or_path, **hub_kwargs)
        return {rf"^{re.escape(elsewhere[name])}\.": "" for name in config.architectures or () if name in elsewhere}


def base_model_path(model: nn.Module) -> str:
    """Where the base model sits in `model` (`base_model_prefix`, possibly dotted), "" in a base model."""
    prefix = model.base_model_prefix
    try:
        model.get_submodule(prefix)
    except AttributeError:
        return ""
    return prefix


def check_loaded_weights(model: nn.Module, info: dict, name, ignore_mismatched_sizes: bool) -> None:
    """Refuse a checkpoint whose backbone or interaction weights disagree with the model its config describes.

    `info` is transformers' loading report. Loading across heads (a checkpoint saved from another class, as its
    config's `architectures` says), keys outside the base model are task heads: missing ones are new heads,
    unexpected ones the heads of the checkpoint's own task, as when transformers loads across heads. A part of the
    base model the checkpoint has no weights for at all is new too (ViT's pooler, absent from the classifier's ViT).
    Every other difference inside the base model, every interaction weight and, in a checkpoint of the model's own
    class, every missing or unexpected weight is a disagreement.
    """
    interaction = [n for n, _ in model.named_parameters() if is_interaction_parameter(n)]
    if interaction and set(interaction) <= info["missing_keys"]:
        # a plain checkpoint would load with random interaction queries: refuse it instead of a wrong model
        raise ValueError(
            f"{name} is not an I-{model._source_name} checkpoint: it has no interaction weights (e.g. "
            f"{sorted(interaction)[:2]}). Convert a {model._source_name} with `{model._converter}(...)`."
        )
    base = base_model_path(model)
    base_dot = f"{base}." if base else ""
    parts = {key.split(".")[0] for key in model.get_submodule(base).state_dict()}  # embeddings, encoder, ...

    def base_part(key: str) -> str | None:
        """The part of the base model a key names (None: a task head). Keys the model has no place for keep their
        checkpoint's names: bare in a base checkpoint, under `base_model_prefix` in a task checkpoint."""
        part = key.removeprefix(f"{model.base_model_prefix}.").split(".")[0]
        return part if part in parts else None

    mismatched = {key: (tuple(ckpt), tuple(own)) for key, ckpt, own in info["mismatched_keys"]}
    unloaded = info["missing_keys"] | set(mismatched)
    loaded_parts = {base_part(k) for k in model.state_dict() if k.startswith(base_dot) and k not in unloaded}
    own_class = type(model).__name__ in (model.config.architectures or ())
    lacking = [
        k
        for k in info["missing_keys"]
        if own_class or is_interaction_parameter(k) or (k.startswith(base_dot) and base_part(k) in loaded_parts)
    ]
    extra = [
        k for k in info["unexpected_keys"] if own_class or is_interaction_parameter(k) or base_part(k) is not None
    ]
    shapes = [
        f"{k}: {ckpt} vs {own}"
        for k, (ckpt, own) in mismatched.items()
        if is_interaction_parameter(k) or k.startswith(base_dot)
    ]
    if lacking or extra or shapes:
        sides = {
            "config.json describes weights the checkpoint lacks": sorted(lacking),
            "the checkpoint holds weights config.json has no place for": sorted(extra),
            "shapes differ, checkpoint vs config.json": sorted(shapes),
        }
        found = "; ".join(f"{side} ({len(keys)}): {keys[:5]}" for side, keys in sides.items() if keys)
        raise ValueError(
            f"The weights in {name} do not match its config.json ({type(model).__name__}, interaction_layers "
            f"{model.config.interaction_layer_indices}): {found}. Fix config.json or the checkpoint."
        )
    heads = sorted(f"{k}: {ckpt} vs {own}" for k, (ckpt, own) in mismatched.items() if not k.startswith(base_dot))
    if heads and not ignore_mismatched_sizes:
        raise ValueError(
            f"The task heads in {name} have other shapes than {type(model).__name__}'s (checkpoint vs model): "
            f"{heads[:5]}. Pass `ignore_mismatched_sizes=True` to initialise new heads."
        )


__all__ = [
    "INTERACTION_FIELDS",
    "INTERACTION_FLAGS",
    "InteractionModelMixin",
    "base_model_path",
    "check_class_labels",
    "check_loaded_weights",
    "check_pixel_values",
    "convert_to_interaction_model",
    "forward_with_interactions",
    "freeze_original_parameters",
    "init_interaction_queries_from_original",
    "is_interaction_parameter",
    "load_source_weights",
]
