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

# Each configuration's task model (what `parameter_report`, cards and baselines build for it).
INTERACTION_MODEL_CLASSES = {IViTConfig: IViTForImageClassification, IDetrConfig: IDetrForObjectDetection}


def interaction_model_class(config) -> type:
    """The task model of an I-configuration (`IViTConfig` -> `IViTForImageClassification`, ...)."""
    for config_class, model_class in INTERACTION_MODEL_CLASSES.items():
        if isinstance(config, config_class):
            return model_class
    raise ValueError(f"{type(config).__name__} is not an hf_lfi interaction configuration.")


__all__ = [
    "INTERACTION_MODEL_CLASSES",
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
    "interaction_model_class",
    "student_map_from_attention",
]
