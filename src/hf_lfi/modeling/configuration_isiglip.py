"""I-SigLIP configuration: SigLIP's vision tower plus the interaction-query hyperparameters of LFI (paper Eq. 3-9)."""

from typing import Literal

from huggingface_hub.dataclasses import strict
from transformers import SiglipConfig, SiglipVisionConfig

from .interaction_config import InteractionConfigMixin, StudentMapConfigMixin


@strict
class ISiglipConfig(StudentMapConfigMixin, InteractionConfigMixin, SiglipVisionConfig):
    r"""
    Configuration of an I-SigLIP image classifier: SigLIP's vision tower (every `SiglipVisionConfig` argument) whose
    attention layers also carry interaction queries P'_q sharing the keys of the original queries, mixed by a gated
    control network (paper Eq. 3-9), plus the interaction fields of `InteractionConfigMixin`. SigLIP has no CLS token:
    the student map is the mean of C_AGT over the query rows (`interaction_map_reduction="mean"`, the only choice).

    Example:

    ```python
    >>> from hf_lfi import ISiglipConfig, ISiglipForImageClassification
    >>> config = ISiglipConfig(image_size=32, patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=4)
    >>> model = ISiglipForImageClassification(config)
    ```"""

    model_type = "isiglip"
    base_config_key = ""  # a top-level configuration, not SigLIP's `vision_config` sub-configuration

    interaction_map_reduction: Literal["mean"] = "mean"

    def base_config(self) -> SiglipConfig:
        """The `SiglipConfig` of the `SiglipForImageClassification` this configuration extends (vision tower and
        labels; the text tower is not built for classification)."""
        labels = {"id2label": self.id2label, "label2id": self.label2id}
        return SiglipConfig(vision_config=self.base_config_dict(SiglipVisionConfig), **labels)


__all__ = ["ISiglipConfig"]
