"""I-DETR configuration: a `DetrConfig` plus the interaction-query hyperparameters of LFI (paper Eq. 3-9)."""

from typing import Literal

from huggingface_hub.dataclasses import strict
from transformers import DetrConfig

from .interaction_config import check_interaction_fields, resolve_interaction_layers


@strict
class IDetrConfig(DetrConfig):
    r"""
    Configuration of an I-DETR: a DETR whose encoder self-attention layers also carry *interaction queries* P'_q
    sharing the keys of the original queries (DETR's rule holds: position embeddings go into queries and keys, so into
    P'_q too), mixed by a gated control network (paper Eq. 3-9). Every `DetrConfig` argument is accepted unchanged.

    interaction_layers (`list[int]`, *optional*):
        Encoder layer indices with interaction queries; `None` (default) means every encoder layer.
    gate_hidden_size (`int`, *optional*, defaults to 0):
        0: the linear gate on each pair (C_AGT[ij], C_VFM[ij]); > 0: a GELU hidden layer of this size.
    gate_granularity (`str`, *optional*, defaults to `"head"`):
        One gate network per attention head, `"layer"`: one per layer, or `"none"`: C_F = (C_AGT + C_VFM) / 2.
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
        Initial gates g1 = sigmoid(-b), g2 = sigmoid(b) with zero weights: a converted DETR is reproduced at step 0.
    freeze_backbone (`bool`, *optional*, defaults to `False`):
        Train only interaction queries, gates and the detection heads (`from_detr` turns it on).

    The student map of a layer is the mean of C_AGT over the query rows of real (unpadded) positions, heads averaged,
    on the backbone feature grid, padded positions set to zero and renormalised.

    Example:

    ```python
    >>> from transformers import ResNetConfig
    >>> from hf_lfi import IDetrConfig, IDetrForObjectDetection
    >>> backbone = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], out_features=["stage2"])
    >>> config = IDetrConfig(use_timm_backbone=False, backbone_config=backbone, d_model=32, encoder_layers=2)
    >>> model = IDetrForObjectDetection(config)
    ```"""

    model_type = "idetr"

    interaction_layers: list[int] | None = None
    gate_hidden_size: int = 0
    gate_granularity: Literal["head", "layer", "none"] = "head"
    gate_form: Literal["element", "row", "scalar"] = "element"
    gate_input_scale: Literal["num_keys", "none"] = "num_keys"
    gate_init_bias: float | int = 0.0
    freeze_backbone: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        check_interaction_fields(self, self.encoder_layers, "encoder_layers")

    @property
    def interaction_layer_indices(self) -> list[int]:
        """The encoder layers carrying interaction queries, resolved (`None` means all)."""
        return resolve_interaction_layers(self.interaction_layers, self.encoder_layers)

    def to_detr_config(self) -> DetrConfig:
        """The plain `DetrConfig` this I-DETR extends (every DETR field, none of the interaction ones): the baseline."""
        fields = DetrConfig.__dataclass_fields__
        return DetrConfig(**{k: v for k, v in self.to_dict().items() if k in fields and k != "model_type"})


__all__ = ["IDetrConfig"]
