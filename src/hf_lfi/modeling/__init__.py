"""The I-models (I-ViT, I-DETR, I-Conditional-DETR, I-DINOv2, I-SigLIP), their configurations and the shared
interaction attention."""

from .configuration_iconditional_detr import IConditionalDetrConfig
from .configuration_idetr import IDetrConfig
from .configuration_idinov2 import IDinov2Config
from .configuration_isiglip import ISiglipConfig
from .configuration_ivit import IViTConfig
from .interaction_attention import GatedControlNetwork, interaction_attention_forward, student_map_from_attention
from .modeling_iconditional_detr import (
    IConditionalDetrForObjectDetection,
    IConditionalDetrModel,
    IConditionalDetrModelOutput,
    IConditionalDetrObjectDetectionOutput,
    IConditionalDetrPreTrainedModel,
)
from .modeling_idetr import (
    IDetrForObjectDetection,
    IDetrForSegmentation,
    IDetrModel,
    IDetrModelOutput,
    IDetrObjectDetectionOutput,
    IDetrPreTrainedModel,
    IDetrSegmentationOutput,
)
from .modeling_idinov2 import (
    IDinov2ForImageClassification,
    IDinov2ImageClassifierOutput,
    IDinov2Model,
    IDinov2ModelOutput,
    IDinov2PreTrainedModel,
)
from .modeling_isiglip import (
    ISiglipForImageClassification,
    ISiglipImageClassifierOutput,
    ISiglipPreTrainedModel,
    ISiglipVisionModel,
    ISiglipVisionModelOutput,
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
    "IConditionalDetrConfig",
    "IConditionalDetrForObjectDetection",
    "IConditionalDetrModel",
    "IConditionalDetrModelOutput",
    "IConditionalDetrObjectDetectionOutput",
    "IConditionalDetrPreTrainedModel",
    "IDetrConfig",
    "IDetrForObjectDetection",
    "IDetrForSegmentation",
    "IDetrModel",
    "IDetrModelOutput",
    "IDetrObjectDetectionOutput",
    "IDetrPreTrainedModel",
    "IDetrSegmentationOutput",
    "IDinov2Config",
    "IDinov2ForImageClassification",
    "IDinov2ImageClassifierOutput",
    "IDinov2Model",
    "IDinov2ModelOutput",
    "IDinov2PreTrainedModel",
    "ISiglipConfig",
    "ISiglipForImageClassification",
    "ISiglipImageClassifierOutput",
    "ISiglipPreTrainedModel",
    "ISiglipVisionModel",
    "ISiglipVisionModelOutput",
    "IViTConfig",
    "IViTForImageClassification",
    "IViTImageClassifierOutput",
    "IViTModel",
    "IViTModelOutput",
    "IViTPreTrainedModel",
    "interaction_attention_forward",
    "student_map_from_attention",
]
