"""Turning a pretrained model into its interaction-query version (architecture.md decision 3).

Shared by I-ViT and I-DETR: load the source weights, start P'_q as a copy of P_q, freeze the original parameters,
refuse checkpoints without interaction weights. Imports only torch and this folder, so that it travels with the
remote code of saved checkpoints.
"""

import torch
from torch import nn

from .interaction_attention import GatedControlNetwork, QueryGate, ScalarGate

# Parameter-name fragments of what LFI adds to a model; everything else is the original backbone.
INTERACTION_PARAMETER_KEYS = ("interaction_q_proj.", "gate.")


def is_interaction_parameter(name: str) -> bool:
    """Whether a parameter name belongs to the interaction queries or the gated control network."""
    return any(key in name for key in INTERACTION_PARAMETER_KEYS)


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
        raise ValueError(f"Mismatched checkpoint: the source has weights the converted model has no place for: {unexpected[:5]}.")
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


class InteractionModelMixin:
    """What every I-model's `PreTrainedModel` shares: freezing the original network and refusing checkpoints that
    lack the interaction weights. Put it before the library's pretrained-model class in the bases.

    Subclasses set `_head_prefixes` (the task heads, trainable besides the interaction parameters) and `_source_name`
    (the model they extend, for messages) and `_converter` (the conversion classmethod to point users at).
    """

    _head_prefixes: tuple[str, ...] = ()
    _source_name = "source"
    _converter = "from_pretrained"

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, (GatedControlNetwork, QueryGate, ScalarGate)):
            module.reset_parameters()

    def freeze_backbone(self) -> None:
        """Train only interaction queries, gated control networks and task heads; freeze the original network."""
        freeze_original_parameters(self, self._head_prefixes)

    def _apply_freezing(self) -> None:
        if self.config.freeze_backbone:
            self.freeze_backbone()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, output_loading_info: bool = False, **kwargs):
        model, info = super().from_pretrained(pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs)
        # a plain checkpoint would load with random interaction queries: refuse it instead of a wrong model
        missing = [name for name in info["missing_keys"] if is_interaction_parameter(name)]
        if missing:
            raise ValueError(
                f"{pretrained_model_name_or_path} is not an I-{cls._source_name} checkpoint: it has no interaction "
                f"weights (e.g. {sorted(missing)[:2]}). Convert a {cls._source_name} with `{cls._converter}(...)`."
            )
        # config.json and weights that disagree (e.g. fewer interaction layers, a lost backbone tensor) would load as
        # randomly initialised or dropped weights: refuse them
        disagreeing = {kind: sorted(info[kind])[:5] for kind in ("missing_keys", "unexpected_keys") if info[kind]}
        if disagreeing:
            raise ValueError(
                f"The weights in {pretrained_model_name_or_path} do not match its config (interaction_layers "
                f"{model.config.interaction_layer_indices}): {disagreeing}. Fix config.json or the checkpoint."
            )
        # loading replaces the parameters, and with them the requires_grad flags set in __init__
        model._apply_freezing()
        return (model, info) if output_loading_info else model


__all__ = [
    "InteractionModelMixin",
    "freeze_original_parameters",
    "init_interaction_queries_from_original",
    "is_interaction_parameter",
    "load_source_weights",
]
