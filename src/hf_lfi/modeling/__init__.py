"""I-ViT (and later I-DETR) models, configurations and the shared interaction attention."""

from .configuration_ivit import IViTConfig
from .interaction_attention import GatedControlNetwork, interaction_attention_forward, student_map_from_attention
from .modeling_ivit import (
    IViTForImageClassification,
    IViTImageClassifierOutput,
    IViTModel,
    IViTModelOutput,
    IViTPreTrainedModel,
)

__all__ = [
    "GatedControlNetwork",
    "IViTConfig",
    "IViTForImageClassification",
    "IViTImageClassifierOutput",
    "IViTModel",
    "IViTModelOutput",
    "IViTPreTrainedModel",
    "interaction_attention_forward",
    "student_map_from_attention",
]
