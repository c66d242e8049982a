"""hf_lfi: Knowledge Transfer from Interaction Learning (LFI), Hugging Face native.

Importing the package registers every student of `hf_lfi.students` with the `transformers` Auto classes, so
`AutoModelForImageClassification.from_pretrained("org/i-vit-b")` works with `hf_lfi` installed, and marks them for
`register_for_auto_class` so saved checkpoints also load with `trust_remote_code=True` without it.

Only the models are imported eagerly; the teacher side (`interactions`), the training pieces, the metrics, the hub
helpers and the recipe load on first use, so that `import hf_lfi` (and every `hf-lfi` command) does not pay for a
VLM teacher, `evaluate` or matplotlib it does not use.
"""

import importlib

from . import modeling
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
from .students import STUDENTS, TASKS, register_auto_classes

__version__ = "0.1.0"

register_auto_classes()

# public name -> the submodule that defines it, imported on first access
_LAZY_NAMES = {
    "InteractionExtractor": "interactions",
    "MaskInteractionMapFn": "interactions",
    "interaction_map_fn": "interactions",
    "mask_to_interaction_map": "interactions",
    "plot_interaction_maps": "interactions",
    "precompute_interactions": "interactions",
    "interaction_dataset_card": "hub",
    "push_interaction_dataset": "hub",
    "save_interaction_dataset": "hub",
    "InteractionTrainer": "training",
    "InteractionTrainingArguments": "training",
    "alignment_loss": "training",
    "resample_teacher_map": "training",
}
_LAZY_MODULES = ("cli", "columns", "hub", "interactions", "metrics", "precompute", "recipe", "training")


def __getattr__(name: str):
    if name in _LAZY_MODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _LAZY_NAMES:
        return getattr(importlib.import_module(f".{_LAZY_NAMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_LAZY_NAMES, *_LAZY_MODULES])


__all__ = [
    *modeling.__all__,
    "PRESET_NAMES",
    "STUDENTS",
    "STUDENT_PRESET_NAMES",
    "TASKS",
    *_LAZY_NAMES,
    "flop_report",
    "parameter_report",
    "preset_config",
]
