"""The training side of LFI: the alignment loss, its training arguments and the `InteractionTrainer`."""

from .alignment import DIRECTIONS, alignment_loss, resample_teacher_map
from .arguments import InteractionTrainingArguments
from .trainer import InteractionTrainer

__all__ = ["DIRECTIONS", "InteractionTrainer", "InteractionTrainingArguments", "alignment_loss", "resample_teacher_map"]
