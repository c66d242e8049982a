"""I-ViT configuration: a `ViTConfig` plus the interaction-query hyperparameters of LFI (paper Eq. 3-9)."""

from typing import Literal

from huggingface_hub.dataclasses import strict
from transformers import ViTConfig

from .interaction_config import check_interaction_fields, resolve_interaction_layers


@strict
class IViTConfig(ViTConfig):
    r"""
    Configuration of an I-ViT: a ViT whose attention layers also carry *interaction queries* P'_q that share the
    keys of the original queries, with a gated control network mixing both attention maps (paper Eq. 3-9).
    Every `ViTConfig` argument is accepted unchanged.

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
        weights start at zero, so g1 + g2 = 1 and a converted model reproduces its source ViT at step 0 (C_AGT =
        C_VFM then). 0 (g1 = g2 = 0.5) was chosen on validation accuracy by benchmarks/gate_study.py; 2.0 was the
        earlier default.
    freeze_backbone (`bool`, *optional*, defaults to `False`):
        Freeze every original ViT parameter, training only interaction queries, gates and the classifier
        (paper section 5.1.2). `from_vit` turns it on; training from scratch (paper Table 2) leaves it off.
    interaction_map_reduction (`str`, *optional*, defaults to `"cls"`):
        How the student map (the distribution over patches aligned with the teacher) is read from C_AGT:
        `"cls"` takes the CLS query row, `"mean"` the mean over all query rows. Heads are averaged, the CLS key
        is dropped and the map is renormalised to sum to 1.
    student_map_source (`str`, *optional*, defaults to `"interaction"`):
        The attention the student map is read from, so the one the alignment loss constrains: C_AGT
        (`"interaction"`, the paper) or C_VFM (`"original"`, the Table 3 ablation "constraint on the original
        queries").

    Example:

    ```python
    >>> from hf_lfi import IViTConfig, IViTForImageClassification
    >>> config = IViTConfig(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2, num_attention_heads=4)
    >>> model = IViTForImageClassification(config)
    ```"""

    model_type = "ivit"

    interaction_layers: list[int] | None = None
    gate_hidden_size: int = 0
    gate_granularity: Literal["head", "layer", "none"] = "head"
    gate_form: Literal["element", "row", "scalar"] = "element"
    gate_input_scale: Literal["num_keys", "none"] = "num_keys"
    gate_init_bias: float | int = 0.0
    freeze_backbone: bool = False
    interaction_map_reduction: Literal["cls", "mean"] = "cls"
    student_map_source: Literal["interaction", "original"] = "interaction"

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        check_interaction_fields(self, self.num_hidden_layers, "num_hidden_layers")
        if self.interaction_map_reduction not in ("cls", "mean"):
            raise ValueError(
                f"interaction_map_reduction must be 'cls' or 'mean', got {self.interaction_map_reduction!r}."
            )

    @property
    def interaction_layer_indices(self) -> list[int]:
        """The layers carrying interaction queries, resolved (`None` means all)."""
        return resolve_interaction_layers(self.interaction_layers, self.num_hidden_layers)

    def to_vit_config(self) -> ViTConfig:
        """The plain `ViTConfig` this I-ViT extends (every ViT field, none of the interaction ones): the baseline."""
        return ViTConfig(**{k: v for k, v in self.to_dict().items() if k in ViTConfig.__dataclass_fields__ and k != "model_type"})


__all__ = ["IViTConfig"]
