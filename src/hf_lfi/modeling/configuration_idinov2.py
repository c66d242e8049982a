"""I-DINOv2 configuration: a DINOv2 (with or without registers) plus the interaction-query hyperparameters of LFI."""

from huggingface_hub.dataclasses import strict
from transformers import Dinov2Config, Dinov2WithRegistersConfig

from .interaction_config import InteractionConfigMixin, StudentMapConfigMixin


@strict
class IDinov2Config(StudentMapConfigMixin, InteractionConfigMixin, Dinov2WithRegistersConfig):
    r"""
    Configuration of an I-DINOv2: a DINOv2 whose attention layers also carry interaction queries P'_q sharing the keys
    of the original queries, mixed by a gated control network (paper Eq. 3-9). Every `Dinov2WithRegistersConfig`
    argument is accepted, and the interaction fields of `InteractionConfigMixin` and `StudentMapConfigMixin`.

    num_register_tokens (`int`, *optional*, defaults to 0):
        0 for DINOv2, the register count for DINOv2 with registers. The prefix tokens (CLS and registers) are left out
        of the student map.
    use_mask_token (`bool`, *optional*, defaults to `True`):
        Whether a DINOv2 without registers has a mask token (`Dinov2Config.use_mask_token`).

    Example:

    ```python
    >>> from hf_lfi import IDinov2Config, IDinov2ForImageClassification
    >>> config = IDinov2Config(image_size=28, patch_size=14, hidden_size=32, num_hidden_layers=2, num_attention_heads=4)
    >>> model = IDinov2ForImageClassification(config)
    ```"""

    model_type = "idinov2"

    num_register_tokens: int = 0
    use_mask_token: bool = True

    @property
    def base_config_class(self) -> type:
        return Dinov2WithRegistersConfig if self.num_register_tokens else Dinov2Config


__all__ = ["IDinov2Config"]
