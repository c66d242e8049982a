"""The training side of LFI: the alignment loss between student and teacher interaction maps."""

from .alignment import DIRECTIONS, alignment_loss, resample_teacher_map

__all__ = ["DIRECTIONS", "alignment_loss", "resample_teacher_map"]
