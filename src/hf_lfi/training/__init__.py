"""The training side of LFI: the alignment loss, its training arguments, the `InteractionTrainer`, data loading,
checks and transforms."""

from .alignment import DIRECTIONS, alignment_loss, place_teacher_maps, resample_teacher_map
from .arguments import InteractionTrainingArguments
from .checkpoints import CheckpointTrainer, last_complete_checkpoint, load_checkpoint_weights
from .data import check_interaction_column, check_labels, label_ids, load_image_dataset, subsample
from .finite import NonFiniteTrainingError
from .trainer import InteractionTrainer
from .transforms import (
    ROW_INDEX_COLUMN,
    TEACHER_IMAGES,
    AugmentationEpochCallback,
    ImageClassificationTransform,
    collate_with_teacher_images,
    random_resized_crop_box,
)

__all__ = [
    "DIRECTIONS",
    "ROW_INDEX_COLUMN",
    "TEACHER_IMAGES",
    "AugmentationEpochCallback",
    "CheckpointTrainer",
    "ImageClassificationTransform",
    "InteractionTrainer",
    "InteractionTrainingArguments",
    "NonFiniteTrainingError",
    "alignment_loss",
    "check_interaction_column",
    "check_labels",
    "collate_with_teacher_images",
    "label_ids",
    "last_complete_checkpoint",
    "load_checkpoint_weights",
    "load_image_dataset",
    "place_teacher_maps",
    "random_resized_crop_box",
    "resample_teacher_map",
    "subsample",
]
