"""Every method's run ends with exactly the weights of the checkpoint it claims, and resumes exactly (CPU, tiny)."""

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from test_detection import detection_argv, detection_data  # noqa: F401  (a fixture)
from test_run import data, tiny_argv  # noqa: F401  (a fixture)
from transformers import AutoModelForImageClassification, AutoModelForObjectDetection

from hf_lfi import recipe
from hf_lfi.training import last_complete_checkpoint

METHODS = ["vit", "ivit", "detr", "idetr"]


@pytest.fixture(scope="module")
def run():
    return recipe


def argv_for(method, data, detection_data, output_dir, *extra):  # noqa: F811
    if method in ("detr", "idetr"):
        return detection_argv(detection_data, output_dir, "--method", method, *extra)
    return tiny_argv(data, output_dir, "--method", method, *extra)


def weights(method, folder):
    auto = AutoModelForObjectDetection if method in ("detr", "idetr") else AutoModelForImageClassification
    return auto.from_pretrained(folder).state_dict()


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    differing = [name for name in a if not torch.equal(a[name], b[name])]
    assert not differing, f"{len(differing)} of {len(a)} tensors differ, e.g. {differing[:3]}"


@pytest.mark.parametrize("method", METHODS)
def test_best_model_at_end_is_exactly_the_best_checkpoint(run, data, detection_data, tmp_path, method):  # noqa: F811
    # "best" = highest eval loss: the first checkpoint, so the last weights in memory are not the best ones
    extra = [
        "--max_steps",
        "3",
        "--eval_strategy",
        "steps",
        "--eval_steps",
        "1",
        "--save_strategy",
        "steps",
        "--save_steps",
        "1",
        "--load_best_model_at_end",
        "true",
        "--metric_for_best_model",
        "loss",
        "--greater_is_better",
        "true",
        "--learning_rate",
        "5e-3",
    ]
    run.main(argv_for(method, data, detection_data, tmp_path, *extra))
    best = json.loads((tmp_path / "trainer_state.json").read_text())["best_model_checkpoint"]
    assert Path(best).name != "checkpoint-3"
    assert_same_weights(weights(method, tmp_path), weights(method, best))


@pytest.mark.parametrize("method", METHODS)
def test_resume_continues_from_exactly_the_checkpoint(run, data, detection_data, tmp_path, method, caplog):  # noqa: F811
    extra = [
        "--max_steps",
        "4",
        "--save_strategy",
        "steps",
        "--save_steps",
        "2",
        "--logging_steps",
        "3",
        "--do_eval",
        "false",
    ]
    straight = run.main(argv_for(method, data, detection_data, tmp_path / "straight", *extra))
    resumed_dir = tmp_path / "resumed"
    shutil.copytree(tmp_path / "straight" / "checkpoint-2", resumed_dir / "checkpoint-2")
    # a newer checkpoint cut short by a kill or a full disk: `latest` skips it and says so
    shutil.copytree(tmp_path / "straight" / "checkpoint-4", resumed_dir / "checkpoint-3")
    weights_file = resumed_dir / "checkpoint-3" / "model.safetensors"
    weights_file.write_bytes(weights_file.read_bytes()[:-100])
    with caplog.at_level(logging.WARNING, logger="hf_lfi.training.checkpoints"):
        resumed = run.main(
            argv_for(method, data, detection_data, resumed_dir, *extra, "--resume_from_checkpoint", "latest")
        )
    assert f"Resuming from {resumed_dir / 'checkpoint-2'}" in caplog.text and "checkpoint-3 (" in caplog.text
    assert_same_weights(weights(method, tmp_path / "straight"), weights(method, resumed_dir))
    # train_loss averages all 4 steps, the 2 before the resume included
    assert resumed["train_loss"] == pytest.approx(straight["train_loss"], rel=1e-6)


def test_last_complete_checkpoint_refuses_checkpoints_without_readable_weights(tmp_path):
    for step in (1, 2):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    shutil.copy(Path(__file__).parent / "conftest.py", tmp_path / "checkpoint-1" / "model.safetensors")
    assert last_complete_checkpoint(str(tmp_path)) is None  # not a safetensors file, checkpoint-2 has no weights
    assert last_complete_checkpoint(str(tmp_path / "absent")) is None
