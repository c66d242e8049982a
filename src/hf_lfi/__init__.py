"""hf_lfi: Knowledge Transfer from Interaction Learning (LFI), Hugging Face native.

Importing the package registers the I-models with the `transformers` Auto classes, so
`AutoModelForImageClassification.from_pretrained("org/i-vit-b")` works with `hf_lfi` installed, and marks them for
`register_for_auto_class` so saved checkpoints also load with `trust_remote_code=True` without it.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForImageSegmentation,
    AutoModelForObjectDetection,
)
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_IMAGE_SEGMENTATION_MAPPING_NAMES,
    MODEL_FOR_OBJECT_DETECTION_MAPPING_NAMES,
)

from . import interactions, metrics, modeling
from .hub import interaction_dataset_card, push_interaction_dataset, save_interaction_dataset
from .interactions import (
    InteractionExtractor,
    MaskInteractionMapFn,
    interaction_map_fn,
    mask_to_interaction_map,
    plot_interaction_maps,
    precompute_interactions,
)
from .modeling import (
    GatedControlNetwork,
    IConditionalDetrConfig,
    IConditionalDetrForObjectDetection,
    IConditionalDetrModel,
    IDetrConfig,
    IDetrForObjectDetection,
    IDetrForSegmentation,
    IDetrModel,
    IDinov2Config,
    IDinov2ForImageClassification,
    IDinov2Model,
    ISiglipConfig,
    ISiglipForImageClassification,
    ISiglipVisionModel,
    IViTConfig,
    IViTForImageClassification,
    IViTImageClassifierOutput,
    IViTModel,
    IViTModelOutput,
    IViTPreTrainedModel,
    interaction_attention_forward,
    student_map_from_attention,
)
from .presets import PRESET_NAMES, STUDENT_PRESET_NAMES, flop_report, parameter_report, preset_config
from .training import InteractionTrainer, InteractionTrainingArguments, alignment_loss, resample_teacher_map

__version__ = "0.1.0"

# Auto classes (pip users), and `auto_map` in saved configs (remote code without the package).
for _config, _base, _task, _auto_task in (
    (IViTConfig, IViTModel, IViTForImageClassification, AutoModelForImageClassification),
    (IDetrConfig, IDetrModel, IDetrForObjectDetection, AutoModelForObjectDetection),
    (IConditionalDetrConfig, IConditionalDetrModel, IConditionalDetrForObjectDetection, AutoModelForObjectDetection),
    (IDinov2Config, IDinov2Model, IDinov2ForImageClassification, AutoModelForImageClassification),
    (ISiglipConfig, ISiglipVisionModel, ISiglipForImageClassification, AutoModelForImageClassification),
):
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    AutoModel.register(_config, _base, exist_ok=True)
    _auto_task.register(_config, _task, exist_ok=True)
    _config.register_for_auto_class()
    _base.register_for_auto_class("AutoModel")
    _task.register_for_auto_class(_auto_task.__name__)
# DETR's second task model, as transformers maps `DetrForSegmentation` (saved checkpoints name it in `auto_map`)
AutoModelForImageSegmentation.register(IDetrConfig, IDetrForSegmentation, exist_ok=True)
IDetrForSegmentation.register_for_auto_class(AutoModelForImageSegmentation.__name__)
# the object-detection and image-segmentation pipelines check models against these tables of names, not against the
# Auto registry above
for _config, _task in (
    (IDetrConfig, IDetrForObjectDetection),
    (IConditionalDetrConfig, IConditionalDetrForObjectDetection),
):
    MODEL_FOR_OBJECT_DETECTION_MAPPING_NAMES.setdefault(_config.model_type, _task.__name__)
MODEL_FOR_IMAGE_SEGMENTATION_MAPPING_NAMES.setdefault(IDetrConfig.model_type, IDetrForSegmentation.__name__)

__all__ = [
    *modeling.__all__,
    "PRESET_NAMES",
    "STUDENT_PRESET_NAMES",
    "InteractionTrainer",
    "InteractionExtractor",
    "InteractionTrainingArguments",
    "MaskInteractionMapFn",
    "alignment_loss",
    "flop_report",
    "interaction_dataset_card",
    "interaction_map_fn",
    "mask_to_interaction_map",
    "plot_interaction_maps",
    "precompute_interactions",
    "push_interaction_dataset",
    "save_interaction_dataset",
    "parameter_report",
    "preset_config",
    "resample_teacher_map",
]
