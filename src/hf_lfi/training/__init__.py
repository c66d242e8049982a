"""The training side of LFI: the alignment loss, its training arguments, the `InteractionTrainer`, data loading,
checks and transforms."""

from .alignment import DIRECTIONS, alignment_loss, resample_teacher_map
from .arguments import InteractionTrainingArguments
from .data import check_interaction_column, check_labels, load_image_dataset, subsample
from .trainer import InteractionTrainer
from .transforms import (
    ROW_INDEX_COLUMN,
    AugmentationEpochCallback,
    ImageClassificationTransform,
    crop_interaction_map,
    random_resized_crop_box,
)

__all__ = [
    "DIRECTIONS",
    "ROW_INDEX_COLUMN",
    "AugmentationEpochCallback",
    "ImageClassificationTransform",
    "InteractionTrainer",
    "InteractionTrainingArguments",
    "alignment_loss",
    "check_interaction_column",
    "check_labels",
    "crop_interaction_map",
    "load_image_dataset",
    "random_resized_crop_box",
    "resample_teacher_map",
    "subsample",
]
