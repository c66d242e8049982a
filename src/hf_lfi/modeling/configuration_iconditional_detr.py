"""I-Conditional-DETR configuration: a `ConditionalDetrConfig` plus the interaction-query hyperparameters of LFI (paper
Eq. 3-9; the few-shot detector of Table 7)."""

from huggingface_hub.dataclasses import strict
from transformers import ConditionalDetrConfig

from .interaction_config import InteractionConfigMixin


@strict
class IConditionalDetrConfig(InteractionConfigMixin, ConditionalDetrConfig):
    r"""
    Configuration of an I-Conditional-DETR: a Conditional-DETR whose encoder self-attention layers also carry
    *interaction queries* P'_q sharing the keys of the original queries, their input the content plus the position
    embedding as for P_q and P_k in Conditional-DETR's encoder, mixed by a gated control network (paper Eq. 3-9).
    Every `ConditionalDetrConfig` argument is accepted unchanged, and every interaction field of
    `InteractionConfigMixin`; `interaction_layers` indexes the encoder layers. The student map is read as for I-DETR.

    Example:

    ```python
    >>> from transformers import ResNetConfig
    >>> from hf_lfi import IConditionalDetrConfig, IConditionalDetrForObjectDetection
    >>> backbone = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], out_features=["stage2"])
    >>> config = IConditionalDetrConfig(use_timm_backbone=False, backbone_config=backbone, d_model=32, encoder_layers=2)
    >>> model = IConditionalDetrForObjectDetection(config)
    ```"""

    base_config_class = ConditionalDetrConfig
    model_type = "iconditional_detr"
    interaction_layer_field = "encoder_layers"


__all__ = ["IConditionalDetrConfig"]
