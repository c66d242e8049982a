"""I-ViT configuration: a `ViTConfig` plus the interaction-query hyperparameters of LFI (paper Eq. 3-9)."""

from huggingface_hub.dataclasses import strict
from transformers import ViTConfig

from .interaction_config import InteractionConfigMixin, StudentMapConfigMixin


@strict
class IViTConfig(StudentMapConfigMixin, InteractionConfigMixin, ViTConfig):
    r"""
    Configuration of an I-ViT: a ViT whose attention layers also carry *interaction queries* P'_q that share the
    keys of the original queries, with a gated control network mixing both attention maps (paper Eq. 3-9).
    Every `ViTConfig` argument is accepted unchanged, and every interaction field of `InteractionConfigMixin`
    (`interaction_layers`, `gate_hidden_size`, `gate_granularity`, `gate_form`, `gate_input_scale`, `gate_init_bias`,
    `freeze_backbone`) and of `StudentMapConfigMixin` (`interaction_map_reduction`, `student_map_source`).

    Example:

    ```python
    >>> from hf_lfi import IViTConfig, IViTForImageClassification
    >>> config = IViTConfig(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2, num_attention_heads=4)
    >>> model = IViTForImageClassification(config)
    ```"""

    base_config_class = ViTConfig
    model_type = "ivit"

    def to_vit_config(self) -> ViTConfig:
        """The plain `ViTConfig` this configuration extends (every field of it, none of the interaction ones)."""
        return self.base_config()


__all__ = ["IViTConfig"]
