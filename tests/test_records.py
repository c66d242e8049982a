"""A run's records never lie: `run_config.json` only once everything is checked and never over another run, a
folder holding a run is not trained into by accident, a resume that changes the model is refused and one that
changes the settings says so."""

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from test_run import TINY, data, tiny_argv  # noqa: F401  (a fixture)

from hf_lfi import recipe

HF_LFI = str(Path(sys.executable).parent / "hf-lfi")
SAVING = ["--save_strategy", "steps", "--save_steps", "2", "--eval_split", ""]


def record(folder: Path) -> dict:
    return json.loads((folder / recipe.RUN_CONFIG_NAME).read_text())


def checkpoints(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("checkpoint-*"))


def test_a_failing_call_writes_no_record(data, tmp_path):  # noqa: F811
    with pytest.raises(ValueError, match="Unknown --config_overrides keys"):
        recipe.main(tiny_argv(data, tmp_path / "out", "--config_overrides", TINY + ",hiden_size=8"))
    assert not (tmp_path / "out" / recipe.RUN_CONFIG_NAME).exists()


def test_a_folder_holding_a_run_is_refused_then_replaced_only_when_asked(data, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    recipe.main(tiny_argv(data, run, *SAVING))
    assert checkpoints(run) == ["checkpoint-2", "checkpoint-4"] and record(run)["training"]["max_steps"] == 4
    before = (run / recipe.RUN_CONFIG_NAME).read_text()
    refused = subprocess.run(
        [HF_LFI, "train", *tiny_argv(data, run, *SAVING, "--max_steps", "2")], capture_output=True, text=True
    )
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert (
        f"hf-lfi train: {run} already holds a run (checkpoint-2, checkpoint-4, all_results.json, run_config.json"
        in refused.stderr
    )
    assert "--resume_from_checkpoint latest" in refused.stderr and "--overwrite_output_dir" in refused.stderr
    assert (run / recipe.RUN_CONFIG_NAME).read_text() == before and checkpoints(run) == [
        "checkpoint-2",
        "checkpoint-4",
    ]

    recipe.main(tiny_argv(data, run, *SAVING, "--max_steps", "2", "--overwrite_output_dir", "true"))
    assert checkpoints(run) == ["checkpoint-2"]  # the replaced run's checkpoint-4 cannot be resumed by mistake
    assert record(run)["training"]["max_steps"] == 2 and "resumes" not in record(run)


def test_resume_refuses_another_model_and_lists_other_settings(data, tmp_path, caplog):  # noqa: F811
    run = tmp_path / "run"
    recipe.main(tiny_argv(data, run, *SAVING, "--max_steps", "2"))
    resume = ["--resume_from_checkpoint", "latest", "--max_steps", "4"]
    wider = TINY.replace("hidden_size=32", "hidden_size=48")
    with pytest.raises(ValueError, match="differs from the checkpoint's in hidden_size: 32 in the checkpoint, 48 now"):
        recipe.main(tiny_argv(data, run, *SAVING, *resume, "--config_overrides", wider))
    assert "resumes" not in record(run)
    changed = ["--learning_rate", "2e-3", "--alignment_weight", "0.5", "--mask_teacher_grid", "4"]
    with caplog.at_level(logging.WARNING, logger="hf_lfi.recipe.records"):
        recipe.main(tiny_argv(data, run, *SAVING, *resume, *changed))
    warning = caplog.text
    for setting in ("learning_rate 0.001 -> 0.002", "alignment_weight 1.0 -> 0.5", "mask_teacher_grid 8 -> 4"):
        assert setting in warning
    kept = record(run)
    assert kept["training"]["learning_rate"] == 1e-3 and kept["data"]["mask_teacher_grid"] == 8
    (resumed,) = kept["resumes"]
    assert resumed["checkpoint"] == "checkpoint-2"
    assert resumed["changed"]["mask_teacher_grid"] == {"recorded": 8, "now": 4}
    assert checkpoints(run) == ["checkpoint-2", "checkpoint-4"]


def test_interaction_dataset_needs_the_dataset_teacher(tmp_path):
    for teacher in ("mask", "vlm"):
        with pytest.raises(ValueError, match=f"holds precomputed teacher maps, but --teacher is '{teacher}'"):
            recipe.parse_arguments(
                ["--interaction_dataset", "org/maps", "--teacher", teacher, "--teacher_model_name_or_path", "x"]
            )
    # a config file's mask teacher is refused too (no silent rebuild of mask maps that ignores the dataset)
    with pytest.raises(ValueError, match="pass --teacher dataset to train on its maps"):
        recipe.parse_arguments(["--config", "tiny_smoke", "--interaction_dataset", str(tmp_path)])
    assert recipe.parse_arguments(["--interaction_dataset", "org/maps"])[1].teacher == "dataset"


def test_few_shot_larger_than_a_class_warns(caplog):
    from datasets import Dataset

    from hf_lfi.training.detection import few_shot_subset

    rows = Dataset.from_dict({"objects": [{"bbox": [[0, 0, 1, 1]], "category": [c]} for c in [0, 0, 0, 1]]})
    with caplog.at_level(logging.WARNING, logger="hf_lfi.training.detection"):
        subset = few_shot_subset(rows, shots=3)
    assert (
        len(subset) == 4 and "--few_shot 3: 1 categories have fewer objects" in caplog.text and "1: 1" in caplog.text
    )
