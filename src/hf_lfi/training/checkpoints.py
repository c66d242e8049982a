"""Checkpoints that load exactly: the weights a run claims (best model, resume), and the newest complete checkpoint.

transformers 5 saves some models (ViT, DETR) under their checkpoint-format key names and renames them back in
`from_pretrained`, while `Trainer` reloads a checkpoint with a raw `load_state_dict(strict=False)` that skips every
renamed key: a best model or a resumed run silently mixed checkpoint and current weights. `CheckpointTrainer` loads
through `from_pretrained` and refuses any difference. It also keeps `train_loss` over all steps of a resumed run, and
stops on non-finite numbers before they reach a checkpoint (`FiniteMixin`).
"""

import copy
import json
import logging
import os
import re

from safetensors import safe_open
from transformers import PreTrainedModel, Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME

from .finite import FiniteMixin

logger = logging.getLogger(__name__)

TRAINER_STATE_NAME = "trainer_state.json"
ADAPTER_SAFE_WEIGHTS_NAME = "adapter_model.safetensors"
# the summed training loss of every step up to the checkpoint, written before the trainer state
TRAIN_LOSS_NAME = "train_loss_sum.json"


def load_checkpoint_weights(model: PreTrainedModel, folder: str) -> None:
    """Copy the weights saved in `folder` into `model`, through `from_pretrained`'s key renaming; any missing,
    unexpected or mis-shaped key is an error."""
    loaded, info = type(model).from_pretrained(folder, config=copy.deepcopy(model.config), output_loading_info=True)
    problems = {kind: info[kind] for kind in ("missing_keys", "unexpected_keys", "mismatched_keys") if info.get(kind)}
    if problems:
        raise ValueError(
            f"The checkpoint {folder} does not hold the weights of this {type(model).__name__}: {problems}."
        )
    model.load_state_dict(loaded.state_dict(), strict=True)


def checkpoint_problem(folder: str) -> str | None:
    """Why `folder` is not a complete checkpoint (a kill or a full disk mid-save), or None."""
    try:
        with open(os.path.join(folder, TRAINER_STATE_NAME)) as file:
            json.load(file)
    except (OSError, ValueError) as error:
        return f"its {TRAINER_STATE_NAME} is missing or unreadable ({error})"
    if os.path.isfile(os.path.join(folder, SAFE_WEIGHTS_INDEX_NAME)):
        with open(os.path.join(folder, SAFE_WEIGHTS_INDEX_NAME)) as file:
            files = sorted(set(json.load(file)["weight_map"].values()))
    else:
        files = [
            name
            for name in (SAFE_WEIGHTS_NAME, ADAPTER_SAFE_WEIGHTS_NAME)
            if os.path.isfile(os.path.join(folder, name))
        ]
        if not files:
            return f"it has no {SAFE_WEIGHTS_NAME}"
    for name in files:
        path = os.path.join(folder, name)
        try:  # the header must cover the whole file: a truncated one fails here
            with safe_open(path, "pt"):
                pass
        except Exception as error:  # safetensors raises its own error type
            return f"{path} is unreadable ({error})"
    return None


def last_complete_checkpoint(output_dir: str) -> str | None:
    """The newest `checkpoint-N` in `output_dir` that was written to the end; newer broken ones are skipped, with a
    warning naming them and the checkpoint used instead."""
    pattern = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
    steps = (
        sorted((int(match.group(1)), name) for name in os.listdir(output_dir) if (match := pattern.match(name)))
        if os.path.isdir(output_dir)
        else []
    )
    skipped = []
    for _, name in reversed(steps):
        folder = os.path.join(output_dir, name)
        problem = checkpoint_problem(folder)
        if problem is None:
            if skipped:
                logger.warning("Resuming from %s; skipped incomplete checkpoints: %s.", folder, "; ".join(skipped))
            return folder
        skipped.append(f"{folder} ({problem})")
    if skipped:
        logger.warning("No complete checkpoint in %s: %s.", output_dir, "; ".join(skipped))
    return None


class CheckpointTrainer(FiniteMixin, Trainer):
    """A `Trainer` whose best-model reload and resume load a checkpoint's weights exactly (see the module docstring),
    whose final `train_loss` after a resume averages every step of the run, not only the resumed ones, and which
    stops on non-finite numbers (`FiniteMixin`)."""

    _loss_sum_before: float | None = 0.0

    def _exact_loading_applies(self, model, folder: str) -> bool:
        plain = isinstance(model, PreTrainedModel) and not (self.is_deepspeed_enabled or self.is_fsdp_enabled)
        files = (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME)
        return plain and any(os.path.isfile(os.path.join(folder, name)) for name in files)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        self._loss_sum_before = read_train_loss_sum(resume_from_checkpoint)
        target = self.accelerator.unwrap_model(model if model is not None else self.model)
        if not self._exact_loading_applies(target, resume_from_checkpoint):  # adapters, DeepSpeed, FSDP
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        logger.info("Loading model weights from %s.", resume_from_checkpoint)
        load_checkpoint_weights(target, resume_from_checkpoint)

    def _load_best_model(self) -> None:
        folder = self.state.best_model_checkpoint
        target = self.accelerator.unwrap_model(self.model)
        if not self._exact_loading_applies(target, folder):
            return super()._load_best_model()
        logger.info("Loading best model from %s (score: %s).", folder, self.state.best_metric)
        load_checkpoint_weights(target, folder)

    def _save_checkpoint(self, model, trial) -> None:
        self.check_finite_weights(f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        if self.args.should_save:  # before the trainer state: a complete checkpoint always has it
            folder = os.path.join(self._get_output_dir(trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            os.makedirs(folder, exist_ok=True)
            loss_sum = self._total_loss_scalar + self._tr_loss.item()
            if self._loss_sum_before is not None:
                with open(os.path.join(folder, TRAIN_LOSS_NAME), "w") as file:
                    json.dump(
                        {"global_step": self.state.global_step, "loss_sum": self._loss_sum_before + loss_sum}, file
                    )
        super()._save_checkpoint(model, trial)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        resumed_steps = getattr(self, "_initial_global_step", 0)
        if "train_loss" in logs and resumed_steps and self._loss_sum_before is not None:
            steps_now = self.state.global_step - resumed_steps
            logs["train_loss"] = (self._loss_sum_before + logs["train_loss"] * steps_now) / self.state.global_step
        super().log(logs, start_time)


def read_train_loss_sum(folder: str) -> float | None:
    """The summed training loss up to the checkpoint in `folder`; None (with a warning) for a checkpoint without it."""
    path = os.path.join(folder, TRAIN_LOSS_NAME)
    if not os.path.isfile(path):
        logger.warning("%s has no %s: the final train_loss covers the resumed steps only.", folder, TRAIN_LOSS_NAME)
        return None
    with open(path) as file:
        return float(json.load(file)["loss_sum"])


__all__ = ["CheckpointTrainer", "checkpoint_problem", "last_complete_checkpoint", "load_checkpoint_weights"]
