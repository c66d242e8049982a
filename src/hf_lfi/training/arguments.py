"""`InteractionTrainingArguments`: `TrainingArguments` plus the alignment-loss settings (paper Eq. 13-14)."""

from dataclasses import dataclass, field

from transformers import TrainingArguments

from .alignment import DIRECTIONS


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
        default=1e-6, metadata={"help": "Smoothing mass added to every patch of both maps before the logarithm."}
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
        if self.alignment_weight < 0:
            raise ValueError(f"alignment_weight must be >= 0, got {self.alignment_weight}.")
        if self.alignment_direction not in DIRECTIONS:
            raise ValueError(f"alignment_direction must be one of {DIRECTIONS}, got {self.alignment_direction!r}.")
        if self.gate_learning_rate_multiplier <= 0:
            raise ValueError(f"gate_learning_rate_multiplier must be > 0, got {self.gate_learning_rate_multiplier}.")
        if not 0 <= self.alignment_epsilon < 1:
            raise ValueError(f"alignment_epsilon must be in [0, 1), got {self.alignment_epsilon}.")


__all__ = ["InteractionTrainingArguments"]
