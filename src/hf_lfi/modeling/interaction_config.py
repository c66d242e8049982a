"""The interaction-query hyperparameters shared by every I-model configuration (paper Eq. 3-9): fields, checks and the
resolved layer list. Imports nothing but the standard library, so it travels with the remote code of checkpoints."""

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

GATE_GRANULARITIES = ("head", "layer", "none")
# what a saved config carries besides its fields, and DetrConfig's legacy backbone switches (read in __post_init__)
_BOOKKEEPING_KEYS = {
    "_name_or_path",
    "model_type",
    "output_attentions",
    "auto_map",
    "architectures",
    "transformers_version",
    "dtype",
}
_LEGACY_KEYS = {"use_timm_backbone", "use_pretrained_backbone", "backbone", "backbone_kwargs"}
# what `BackboneConfigMixin` (DINOv2) serialises besides its fields
_BACKBONE_KEYS = {"out_features", "out_indices", "stage_names"}


def known_keys(config_class) -> set[str]:
    """The keys a configuration of `config_class` may carry: its fields and what a saved configuration adds."""
    return (
        {field.name for field in dataclasses.fields(config_class)} | _BOOKKEEPING_KEYS | _LEGACY_KEYS | _BACKBONE_KEYS
    )


def check_known_keys(config) -> None:
    """Refuse keys that are no field of the config (a typo such as `gate_granularty` would otherwise be kept as an
    attribute that nothing reads)."""
    known = known_keys(config)
    unknown = sorted(set(config.to_dict()) - known)
    if unknown:
        raise ValueError(f"Unknown {type(config).__name__} keys {unknown}: not fields of the config (a typo?).")


@dataclass
class InteractionConfigMixin:
    r"""
    The LFI fields of an I-model configuration; put it before the library's configuration class in the bases.
    Subclasses set `base_config_class` (the library configuration they extend) and `interaction_layer_field`, the
    parent field holding the number of layers that can get interaction queries (`"num_hidden_layers"`, DETR's
    `"encoder_layers"`).

    interaction_layers (`list[int]`, *optional*):
        Indices of the layers that get interaction queries. `None` (default) means every layer, as in the paper.
        Other layers keep the library's attention path (SDPA by default).
    gate_hidden_size (`int`, *optional*, defaults to 0):
        Hidden size of the gated control network applied to each pair (C_AGT[ij], C_VFM[ij]). 0 gives the cheap
        linear gate `[g1, g2] = sigmoid(W [C_AGT, C_VFM] + b)`; a positive value inserts a GELU hidden layer.
    gate_granularity (`str`, *optional*, defaults to `"head"`):
        `"head"`: one gate network per attention head; `"layer"`: one shared by all heads of a layer; `"none"`: no
        gate, C_F = (C_AGT + C_VFM) / 2 (the paper's Table 3 ablation "without gate").
    gate_form (`str`, *optional*, defaults to `"element"`):
        What a gate value depends on. `"element"`: one gate pair per attention entry from (C_AGT[ij], C_VFM[ij]) (the
        paper's Eq. 5); `"row"`: one pair per query row from the query token (`sigmoid(W x_i + b)`); `"scalar"`: one
        learned pair per head (or layer) for all inputs. `"row"`, `"scalar"` and `gate_granularity="none"` read no
        attention entry, so those layers run fused attention (`scaled_dot_product_attention`) and keep no N x N map.
    gate_input_scale (`str`, *optional*, defaults to `"num_keys"`):
        Input of the per-element gate: `"num_keys"` feeds N * C_AGT and N * C_VFM (N keys; uniform attention reads 1 at
        any sequence length), `"none"` the raw probabilities (~1/N, which the zero-initialised weights can barely turn
        into a change of the gate).
    gate_init_bias (`float`, *optional*, defaults to 0.0):
        The gate starts at g1 = sigmoid(-b) (interaction map) and g2 = sigmoid(b) (original map). The output
        weights start at zero, so g1 + g2 = 1 and a converted model reproduces its source model at step 0 (C_AGT =
        C_VFM then). 0 (g1 = g2 = 0.5) was chosen on validation accuracy by benchmarks/gate_study.py; 2.0 was the
        earlier default.
    freeze_backbone (`bool`, *optional*, defaults to `False`):
        Freeze every original parameter, training only interaction queries, gates and the task heads (paper section
        5.1.2). The conversions (`from_vit`, `from_detr`, ...) turn it on; training from scratch leaves it off.
    """

    base_config_class = None
    interaction_layer_field = "num_hidden_layers"

    interaction_layers: list[int] | None = None
    gate_hidden_size: int = 0
    gate_granularity: Literal["head", "layer", "none"] = "head"
    gate_form: Literal["element", "row", "scalar"] = "element"
    gate_input_scale: Literal["num_keys", "none"] = "num_keys"
    gate_init_bias: float | int = 0.0
    freeze_backbone: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        check_interaction_fields(self, getattr(self, self.interaction_layer_field), self.interaction_layer_field)

    @property
    def interaction_layer_indices(self) -> list[int]:
        """The layers carrying interaction queries, resolved (`None` means all)."""
        return resolve_interaction_layers(self.interaction_layers, getattr(self, self.interaction_layer_field))

    def base_config_dict(self, base_class) -> dict:
        """This configuration's values for `base_class` (every field it knows, none of the interaction ones)."""
        fields = base_class.__dataclass_fields__
        return {k: v for k, v in self.to_dict().items() if k in fields and k != "model_type"}

    def base_config(self):
        """The plain configuration of the source model this I-model extends (`base_config_class`): the baseline."""
        return self.base_config_class(**self.base_config_dict(self.base_config_class))


@dataclass
class StudentMapConfigMixin:
    r"""
    How the student map of a token model (ViT, DINOv2, SigLIP) is read; put it before `InteractionConfigMixin`.

    interaction_map_reduction (`str`, *optional*, defaults to `"cls"`):
        How the student map (the distribution over patches aligned with the teacher) is read from C_AGT:
        `"cls"` takes the CLS query row, `"mean"` the mean over all query rows. Heads are averaged, the prefix keys
        (CLS, registers) are dropped and the map is renormalised to sum to 1.
    student_map_source (`str`, *optional*, defaults to `"interaction"`):
        The attention the student map is read from, so the one the alignment loss constrains: C_AGT
        (`"interaction"`, the paper) or C_VFM (`"original"`, the Table 3 ablation "constraint on the original
        queries").
    """

    interaction_map_reduction: Literal["cls", "mean"] = "cls"
    student_map_source: Literal["interaction", "original"] = "interaction"


def check_interaction_fields(config, num_layers: int, layer_field: str) -> None:
    """Validate `interaction_layers` (against `num_layers`, named by `layer_field`) and the gate fields of `config`;
    store the layers sorted. Raises ValueError naming the problem."""
    check_known_keys(config)
    if config.interaction_layers is not None:
        layers = list(config.interaction_layers)
        if not layers:
            raise ValueError(
                "interaction_layers is empty: the model would have no interaction queries and learn nothing from "
                "interactions (it would be its source model). Leave it unset for every layer, or name the layers."
            )
        bad = [i for i in layers if not 0 <= i < num_layers]
        if bad:
            raise ValueError(
                f"interaction_layers names layer indices {bad} out of range: the model has "
                f"{layer_field}={num_layers} (valid indices 0..{num_layers - 1})."
            )
        if len(set(layers)) != len(layers):
            raise ValueError(f"interaction_layers has repeated indices: {layers}.")
        config.interaction_layers = sorted(layers)
    if config.gate_hidden_size < 0:
        raise ValueError(f"gate_hidden_size must be >= 0 (0 = linear gate), got {config.gate_hidden_size}.")
    if config.gate_granularity not in GATE_GRANULARITIES:
        raise ValueError(f"gate_granularity must be one of {GATE_GRANULARITIES}, got {config.gate_granularity!r}.")
    if not math.isfinite(config.gate_init_bias):
        raise ValueError(f"gate_init_bias must be finite, got {config.gate_init_bias} (the gates would be NaN).")
    check_gate_fields_have_effect(config)


def check_gate_fields_have_effect(config) -> None:
    """Refuse a gate field set to a value other than its default where the gate it shapes does not exist: no gate
    (`gate_granularity="none"`), or a gate that reads no attention entry (`gate_form` other than `"element"`)."""
    defaults = {"gate_form": "element", "gate_hidden_size": 0, "gate_input_scale": "num_keys", "gate_init_bias": 0}
    if config.gate_granularity == "none":
        ignored = [f"{name}={getattr(config, name)!r}" for name in defaults if getattr(config, name) != defaults[name]]
        if ignored:
            raise ValueError(
                f"gate_granularity='none' has no gate (C_F = (C_AGT + C_VFM) / 2): {', '.join(ignored)} would have no "
                "effect. Leave it at its default, or choose gate_granularity 'head' or 'layer'."
            )
    if config.gate_form != "element":
        ignored = [
            f"{name}={getattr(config, name)!r}"
            for name in ("gate_hidden_size", "gate_input_scale")
            if getattr(config, name) != defaults[name]
        ]
        if ignored:
            raise ValueError(
                f"{', '.join(ignored)} applies to the per-element gate only (gate_form='element'), which reads the "
                f"attention entries; gate_form is {config.gate_form!r}, so it would have no effect."
            )


def resolve_interaction_layers(interaction_layers: list[int] | None, num_layers: int) -> list[int]:
    """The layers carrying interaction queries (`None` means all)."""
    return list(range(num_layers)) if interaction_layers is None else list(interaction_layers)


__all__ = [
    "GATE_GRANULARITIES",
    "InteractionConfigMixin",
    "StudentMapConfigMixin",
    "check_gate_fields_have_effect",
    "check_interaction_fields",
    "check_known_keys",
    "known_keys",
    "resolve_interaction_layers",
]
