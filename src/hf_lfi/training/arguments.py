"""`InteractionTrainingArguments`: `TrainingArguments` plus the alignment-loss settings (paper Eq. 13-14)."""

import math
from dataclasses import dataclass, field

from transformers import TrainingArguments

from .alignment import DIRECTIONS, check_epsilon


@dataclass
class InteractionTrainingArguments(TrainingArguments):
    alignment_weight: float = field(
        default=1.0,
        metadata={
            "help": "Weight lambda of the alignment loss: L = L_task + lambda * D_KL (Eq. 13). 0 trains the task alone."
        },
    )
    alignment_direction: str = field(
        default="student_teacher",
        metadata={
            "help": "KL direction: 'student_teacher' = D_KL(C_AGT || C_VLM) (paper Eq. 14) or 'teacher_student'."
        },
    )
    alignment_epsilon: float = field(
        default=1e-6,
        metadata={"help": "Smoothing mass added to every patch of both maps before the logarithm, in (0, 1)."},
    )
    alignment_layers: list[int] | None = field(
        default=None,
        metadata={"help": "Model layer indices whose student maps are aligned (default: every interaction layer)."},
    )
    gate_learning_rate_multiplier: float = field(
        default=10.0,
        metadata={
            "help": "The gated control networks train at learning_rate times this (an optimizer parameter group of "
            "their own, scheduled like the others): a gate bias moves about one learning rate per Adam step, so at 1 "
            "the gates barely leave their init. 10 was chosen on validation accuracy (benchmarks/gate_study.py)."
        },
    )
    interaction_map_column: str = field(
        default="interaction_map", metadata={"help": "Batch column holding the teacher maps (batch, h, w)."}
    )
    interaction_valid_column: str = field(
        default="interaction_valid",
        metadata={"help": "Optional boolean batch column; False rows (failed teacher answers) get no alignment loss."},
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Train into an --output_dir that holds a run: its checkpoints and records are removed first "
            "(without it, such a folder is refused unless --resume_from_checkpoint is given)."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        check_numbers(self)
        if self.alignment_direction not in DIRECTIONS:
            raise ValueError(f"alignment_direction must be one of {DIRECTIONS}, got {self.alignment_direction!r}.")
        check_epsilon(self.alignment_epsilon, "alignment_epsilon")
        if self.alignment_layers is not None:
            if not self.alignment_layers:
                raise ValueError(
                    "alignment_layers is empty: no student map would be aligned. Leave it unset (every interaction "
                    "layer), or set alignment_weight=0 to train the task alone."
                )
            if len(set(self.alignment_layers)) != len(self.alignment_layers):
                raise ValueError(f"alignment_layers repeats layers: {self.alignment_layers} (each counts once).")
            if min(self.alignment_layers) < 0:
                raise ValueError(f"alignment_layers are layer indices >= 0, got {self.alignment_layers}.")
        if self.interaction_map_column == self.interaction_valid_column:
            raise ValueError(
                f"interaction_map_column and interaction_valid_column are both {self.interaction_map_column!r}: the maps "
                "and their validity flags are two columns."
            )


# field: (low, high, low included, high included, why values outside are refused); NaN is refused everywhere, inf
# where the range does not include it
NUMBER_RANGES = {
    "learning_rate": (0, math.inf, True, False, "a negative rate climbs the loss"),
    "weight_decay": (-math.inf, math.inf, False, False, ""),
    "adam_beta1": (0, 1, True, False, "Adam divides by 1 - beta1**step, which is 0 at 1"),
    "adam_beta2": (0, 1, True, False, "Adam divides by 1 - beta2**step, which is 0 at 1"),
    "adam_epsilon": (0, math.inf, True, False, "Adam divides by sqrt(v) + epsilon"),
    "max_grad_norm": (-math.inf, math.inf, False, True, ""),  # inf: no clipping
    "label_smoothing_factor": (0, 1, True, False, "it is the share of the target mass spread over the classes"),
    "alignment_weight": (0, math.inf, True, False, "a negative weight rewards moving away from the teacher"),
    "gate_learning_rate_multiplier": (0, math.inf, False, False, "it multiplies the learning rate of the gates"),
}


def check_numbers(args: TrainingArguments) -> None:
    """Refuse numeric settings that can only give non-finite or meaningless training (`NUMBER_RANGES`): NaN or
    infinite values, a negative learning rate or alignment weight, Adam betas of 1."""
    for name, (low, high, low_ok, high_ok, why) in NUMBER_RANGES.items():
        value = getattr(args, name)
        if math.isnan(value) or (math.isinf(value) and not (high_ok and value == high)):
            raise ValueError(
                f"{name} must be finite, got {value}: it would make the weights or the loss NaN or infinite from the "
                "first step."
            )
        if not ((value > low or (low_ok and value == low)) and (value < high or (high_ok and value == high))):
            interval = f"{'[' if low_ok else '('}{low}, {high}{']' if high_ok else ')'}"
            raise ValueError(f"{name} must be in {interval}, got {value}: {why}.")


__all__ = ["InteractionTrainingArguments"]
