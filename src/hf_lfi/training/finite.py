"""Training never continues on non-finite numbers (architecture.md decision 18).

The `Trainer` keeps going on a NaN or infinite loss: `logging_nan_inf_filter` logs it as the running mean, a NaN
gradient turns every weight into NaN at the next optimizer step, and the run exits 0 with a NaN model. `FiniteMixin`
stops the run instead, naming the step and the term, before anything is saved from that step: a non-finite training
loss (after its backward pass, before the optimizer step), a non-finite gradient norm (unless fp16's gradient scaler
is there to skip such steps), a non-finite evaluation loss, and weights that became non-finite, which no checkpoint or
`save_model` ever writes. The last good checkpoint stays the latest.
"""

import math

import torch


class NonFiniteTrainingError(RuntimeError):
    """Training met a NaN or infinite loss, gradient norm or weight; the message names the step and the term."""


class FiniteMixin:
    """Put it before `Trainer` in the bases: stops training on non-finite numbers (see the module docstring)."""

    def _step_being_trained(self) -> int:
        return self.state.global_step + 1

    def stop_non_finite(self, what: str, step: int | None = None, training: bool = True) -> None:
        """Raise `NonFiniteTrainingError` for `what` (e.g. "alignment_loss = nan") at `step`, saying which checkpoint
        is the latest one."""
        from .checkpoints import last_complete_checkpoint  # checkpoints.py builds its trainer on this mixin

        step = self._step_being_trained() if step is None else step
        latest = last_complete_checkpoint(self.args.output_dir) if self.args.output_dir else None
        kept = f"the latest checkpoint is {latest}" if latest else "no checkpoint had been saved"
        if training:
            raise NonFiniteTrainingError(
                f"Training stopped at step {step}: {what}. Nothing from step {step} was saved; {kept}. Lower the "
                "learning rate or fix the inputs of this step, then resume from that checkpoint."
            )
        raise NonFiniteTrainingError(f"Evaluation after step {step} stopped: {what}; {kept}.")

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not torch.isfinite(loss).all():  # after the backward pass, before the optimizer step
            self.stop_non_finite(f"the training loss is {loss.item()}")
        return loss

    def _get_grad_norm(self, model, grad_norm=None):
        grad_norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        # fp16's gradient scaler skips steps with non-finite gradients and lowers its scale: that is its job
        if grad_norm is not None and self.accelerator.scaler is None and not math.isfinite(float(grad_norm)):
            names = [n for n, p in model.named_parameters() if p.grad is not None and not p.grad.isfinite().all()]
            self.stop_non_finite(
                f"the gradient norm is {float(grad_norm)} (non-finite gradients in {len(names)} parameters, e.g. "
                f"{names[:3]})"
            )
        return grad_norm

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        loss, logits, labels = super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
        if loss is not None and not torch.isfinite(loss).all():
            self.stop_non_finite(f"the evaluation loss of a batch is {loss.item()}", self.state.global_step, False)
        return loss, logits, labels

    def check_finite_weights(self, where: str) -> None:
        """Refuse to save non-finite weights to `where` (a checkpoint or the final model)."""
        model = self.accelerator.unwrap_model(self.model)
        names = [name for name, parameter in model.named_parameters() if not parameter.isfinite().all()]
        if names:
            self.stop_non_finite(
                f"{len(names)} weights are NaN or infinite after the optimizer step (e.g. {names[:3]}); refusing to "
                f"save them to {where}",
                self.state.global_step,
            )

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        if not _internal_call:  # a checkpoint's weights are checked before any of its files is written
            self.check_finite_weights(output_dir or self.args.output_dir)
        super().save_model(output_dir, _internal_call=_internal_call)


__all__ = ["FiniteMixin", "NonFiniteTrainingError"]
