"""I-DETR configuration: a `DetrConfig` plus the interaction-query hyperparameters of LFI (paper Eq. 3-9)."""

from huggingface_hub.dataclasses import strict
from transformers import DetrConfig

from .interaction_config import InteractionConfigMixin


@strict
class IDetrConfig(InteractionConfigMixin, DetrConfig):
    r"""
    Configuration of an I-DETR: a DETR whose encoder self-attention layers also carry *interaction queries* P'_q
    sharing the keys of the original queries (DETR's rule holds: position embeddings go into queries and keys, so into
    P'_q too), mixed by a gated control network (paper Eq. 3-9). Every `DetrConfig` argument is accepted unchanged,
    and every interaction field of `InteractionConfigMixin`; `interaction_layers` indexes the encoder layers.

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

    base_config_class = DetrConfig
    model_type = "idetr"
    interaction_layer_field = "encoder_layers"

    def to_detr_config(self) -> DetrConfig:
        """The plain `DetrConfig` this configuration extends (every field of it, none of the interaction ones)."""
        return self.base_config()


__all__ = ["IDetrConfig"]
