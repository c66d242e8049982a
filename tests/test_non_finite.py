"""Training never continues on non-finite numbers: a real tiny run with checkpoints stops at the step whose loss,
student map, gradient or weights are NaN or infinite, names the step and the term, and saves nothing from it; the
last good checkpoint stays the latest. Settings that can only give non-finite training are refused at parse time."""

import math

import pytest
import torch
from conftest import tiny_vit
from datasets import Dataset
from test_trainer import training_arguments
from transformers import TrainerCallback

from hf_lfi import IViTForImageClassification
from hf_lfi.training import (
    CheckpointTrainer,
    InteractionTrainer,
    InteractionTrainingArguments,
    NonFiniteTrainingError,
    last_complete_checkpoint,
)


def dataset(n=12, huge_from=None):
    """n rows in training order (sequential sampling); rows from `huge_from` on have finite pixel values so large
    (3e38) that the patch embedding overflows: the loss of their step is NaN, as with unnormalised data."""
    g = torch.Generator().manual_seed(0)
    pixels = torch.randn(n, 3, 30, 30, generator=g)
    if huge_from is not None:
        pixels[huge_from:] = 3e38
    maps = torch.zeros(n, 24, 24)
    maps[:, 4:12, 6:14] = 1 / 64
    columns = {"pixel_values": pixels.tolist(), "labels": [i % 3 for i in range(n)], "interaction_map": maps.tolist()}
    return Dataset.from_dict(columns).with_format("torch")


def arguments(tmp_path, **overrides):
    """Three steps in row order, a checkpoint after each."""
    settings = dict(learning_rate=1e-3, max_steps=3, save_strategy="steps", save_steps=1)
    return training_arguments(tmp_path, train_sampling_strategy="sequential", **{**settings, **overrides})


def interaction_trainer(tmp_path, train, callbacks=(), **overrides):
    model = IViTForImageClassification.from_vit(tiny_vit())
    return InteractionTrainer(
        model=model, args=arguments(tmp_path, **overrides), train_dataset=train, callbacks=list(callbacks)
    )


def assert_stopped_after_good_checkpoint(tmp_path, error, step):
    message = str(error.value)
    assert f"step {step}" in message
    latest = last_complete_checkpoint(str(tmp_path))
    assert latest == str(tmp_path / f"checkpoint-{step - 1}") and latest in message
    assert not (tmp_path / f"checkpoint-{step}").exists()
    reloaded = IViTForImageClassification.from_pretrained(latest)
    assert all(torch.isfinite(p).all() for p in reloaded.parameters())


def test_nan_task_loss_stops_before_its_step_is_saved(tmp_path):
    trainer = interaction_trainer(tmp_path, dataset(huge_from=8))
    with pytest.raises(
        NonFiniteTrainingError, match="Training stopped at step 3: task_loss.* are not finite"
    ) as error:
        trainer.train()
    assert_stopped_after_good_checkpoint(tmp_path, error, 3)
    assert trainer.state.global_step == 2


class NanStudentMap(TrainerCallback):
    """From step `step` on, layer 1 publishes a NaN student map (its output, and so the logits, stay finite)."""

    def __init__(self, step):
        self.step, self.handles = step, []

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step + 1 == self.step and not self.handles:
            recorder = model.vit.layers[1].attention.interactions
            hook = recorder.register_forward_hook(lambda _m, _a, out: (out[0] * math.nan, out[1]), prepend=True)
            self.handles.append(hook)  # before the hook that records the output


def test_nan_student_map_names_its_layer(tmp_path):
    trainer = interaction_trainer(tmp_path, dataset(), callbacks=[NanStudentMap(step=2)])
    with pytest.raises(NonFiniteTrainingError, match="step 2: the student map of layer 1 is not finite") as error:
        trainer.train()
    assert_stopped_after_good_checkpoint(tmp_path, error, 2)


class InfiniteGradient(TrainerCallback):
    """At step `step`, the gradient of one interaction query overflows (the loss stays finite)."""

    def __init__(self, step):
        self.step = step

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step + 1 == self.step:
            weight = model.vit.layers[0].attention.interaction_q_proj.weight
            weight.register_hook(lambda grad: grad * math.inf)


def test_non_finite_gradient_norm_stops_before_the_optimizer_step(tmp_path):
    trainer = interaction_trainer(tmp_path, dataset(), callbacks=[InfiniteGradient(step=3)])
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    with pytest.raises(NonFiniteTrainingError, match="step 3: the gradient norm is (nan|inf)") as error:
        trainer.train()
    assert "vit.layers.0.attention.interaction_q_proj.weight" in str(error.value)
    assert_stopped_after_good_checkpoint(tmp_path, error, 3)
    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])]
    assert changed and all(torch.isfinite(p).all() for p in trainer.model.parameters())  # step 3 never applied


class InfiniteWeight(TrainerCallback):
    """After the optimizer step of `step`, one weight is infinite (as a too large update would leave it)."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.step:
            with torch.no_grad():
                model.classifier.weight[0, 0] = math.inf


def test_non_finite_weights_are_never_saved(tmp_path):
    trainer = interaction_trainer(tmp_path, dataset(), callbacks=[InfiniteWeight(step=2)])
    with pytest.raises(NonFiniteTrainingError, match="classifier.weight.*refusing to save them to checkpoint-2"):
        trainer.train()
    assert last_complete_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-1")
    assert not (tmp_path / "checkpoint-2").exists()
    with pytest.raises(NonFiniteTrainingError, match="refusing to save them"):
        trainer.save_model(str(tmp_path / "final"))
    assert not (tmp_path / "final").exists()


def test_baseline_trainer_stops_on_nan_loss_and_nan_evaluation(tmp_path):
    """The baseline (a plain ViT, `CheckpointTrainer`) stops too, in training and in evaluation."""
    args = arguments(tmp_path / "train", remove_unused_columns=False)
    train = dataset(huge_from=8).remove_columns("interaction_map")
    trainer = CheckpointTrainer(model=tiny_vit().train(), args=args, train_dataset=train)
    with pytest.raises(NonFiniteTrainingError, match="Training stopped at step 3: the training loss is nan"):
        trainer.train()
    assert last_complete_checkpoint(str(tmp_path / "train")) == str(tmp_path / "train" / "checkpoint-2")
    evaluator = CheckpointTrainer(model=tiny_vit(), args=arguments(tmp_path / "eval"), eval_dataset=train)
    with pytest.raises(NonFiniteTrainingError, match="Evaluation after step 0 stopped: the evaluation loss"):
        evaluator.evaluate()


def test_interaction_evaluation_stops_on_nan(tmp_path):
    trainer = interaction_trainer(tmp_path, dataset())
    with pytest.raises(NonFiniteTrainingError, match="Evaluation after step 0 stopped: task_loss.* are not finite"):
        trainer.evaluate(dataset(huge_from=0))


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"alignment_epsilon": 0.0}, "alignment_epsilon must be in \\(0, 1\\), got 0.0"),
        ({"alignment_epsilon": 1.0}, "alignment_epsilon must be in \\(0, 1\\)"),
        ({"alignment_weight": math.nan}, "alignment_weight must be finite, got nan"),
        ({"alignment_weight": math.inf}, "alignment_weight must be finite, got inf"),
        ({"gate_learning_rate_multiplier": math.nan}, "gate_learning_rate_multiplier must be finite"),
        ({"learning_rate": math.nan}, "learning_rate must be finite, got nan: it would make the weights"),
        ({"learning_rate": math.inf}, "learning_rate must be finite, got inf"),
        ({"learning_rate": -1e-3}, "learning_rate must be in \\[0, inf\\), got -0.001: a negative rate"),
        ({"adam_beta1": 1.0}, "adam_beta1 must be in \\[0, 1\\), got 1.0: Adam divides by 1 - beta1"),
        ({"adam_beta2": 1.0}, "adam_beta2 must be in \\[0, 1\\)"),
        ({"adam_epsilon": math.nan}, "adam_epsilon must be finite, got nan"),
        ({"max_grad_norm": math.nan}, "max_grad_norm must be finite, got nan"),
        ({"weight_decay": math.nan}, "weight_decay must be finite, got nan"),
        ({"label_smoothing_factor": 1.0}, "label_smoothing_factor must be in \\[0, 1\\)"),
        ({"alignment_layers": []}, "alignment_layers is empty"),
        ({"alignment_layers": [0, 0]}, "alignment_layers repeats layers: \\[0, 0\\]"),
    ],
)
def test_settings_that_can_only_give_non_finite_training_are_refused(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        InteractionTrainingArguments(output_dir=str(tmp_path), report_to="none", **overrides)


def test_max_grad_norm_inf_means_no_clipping(tmp_path):
    assert InteractionTrainingArguments(output_dir=str(tmp_path), max_grad_norm=math.inf).max_grad_norm == math.inf


def test_label_smoothing_applies_and_compute_loss_func_is_refused(tmp_path):
    losses = {}
    for factor in (0.0, 0.5):
        torch.manual_seed(0)
        trainer = interaction_trainer(
            tmp_path / str(factor), dataset(4), save_strategy="no", max_steps=1, label_smoothing_factor=factor
        )
        trainer.train()
        losses[factor] = trainer.state.log_history[0]["task_loss"]
    torch.manual_seed(0)
    logits = IViTForImageClassification.from_vit(tiny_vit())(dataset(4)[:4]["pixel_values"]).logits
    labels = torch.tensor([0, 1, 2, 0])
    smoothed = torch.nn.functional.cross_entropy(logits, labels, label_smoothing=0.5)
    assert losses[0.5] == pytest.approx(smoothed.item(), rel=1e-4) and losses[0.5] != pytest.approx(losses[0.0])
    with pytest.raises(ValueError, match="compute_loss_func would be ignored"):
        InteractionTrainer(
            model=IViTForImageClassification.from_vit(tiny_vit()),
            args=arguments(tmp_path),
            compute_loss_func=lambda outputs, labels, num_items_in_batch=None: outputs.logits.sum(),
        )


def test_hf_lfi_train_stops_in_one_line_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    """The command line: a learning rate that sends the weights to 1e30 after step 1 stops the run at step 2, one
    line naming the step, the terms and the checkpoint to resume from."""
    from hf_lfi.cli import main as cli_main

    argv = ["train", "--config", "tiny_smoke", "--output_dir", str(tmp_path), "--learning_rate", "1e30"]
    argv += ["--max_steps", "4", "--save_strategy", "steps", "--save_steps", "1", "--do_eval", "false"]
    assert cli_main(argv) == 2
    error = next(line for line in capsys.readouterr().err.splitlines() if line.startswith("hf-lfi train:"))
    assert error.startswith("hf-lfi train: Training stopped at step 2: task_loss")
    assert f"the latest checkpoint is {tmp_path / 'checkpoint-1'}" in error
    assert last_complete_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-1")
