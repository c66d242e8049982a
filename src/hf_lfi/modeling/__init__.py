"""I-ViT and I-DETR models, configurations and the shared interaction attention."""

from .configuration_idetr import IDetrConfig
from .configuration_ivit import IViTConfig
from .interaction_attention import GatedControlNetwork, interaction_attention_forward, student_map_from_attention
from .modeling_idetr import (
    IDetrForObjectDetection,
    IDetrModel,
    IDetrModelOutput,
    IDetrObjectDetectionOutput,
    IDetrPreTrainedModel,
)
from .modeling_ivit import (
    IViTForImageClassification,
    IViTImageClassifierOutput,
    IViTModel,
    IViTModelOutput,
    IViTPreTrainedModel,
)

__all__ = [
    "GatedControlNetwork",
    "IDetrConfig",
    "IDetrForObjectDetection",
    "IDetrModel",
    "IDetrModelOutput",
    "IDetrObjectDetectionOutput",
    "IDetrPreTrainedModel",
    "IViTConfig",
    "IViTForImageClassification",
    "IViTImageClassifierOutput",
    "IViTModel",
    "IViTModelOutput",
    "IViTPreTrainedModel",
    "interaction_attention_forward",
    "student_map_from_attention",
]
