"""`hf-lfi publish` for every student and task of the registry: what it stages, the card, the baseline column, the
refusals, and loading the staged folder back through the Auto classes and the pipelines."""

import json
import logging
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import transformers
from conftest import tiny_student_config
from huggingface_hub import ModelCard
from PIL import Image

import hf_lfi
from hf_lfi import cli
from hf_lfi.students import TASKS

STUDENT_TASKS = [(student, task) for student in hf_lfi.STUDENTS for task in student.tasks]
IDS = [f"{student.method}-{task}" for student, task in STUDENT_TASKS]
HF_LFI = str(Path(sys.executable).parent / "hf-lfi")


def fake_run(folder: Path, student, task: str, baseline: bool = False) -> Path:
    """The folder an `hf-lfi train` run leaves (model, processor, results, trainer state, run record), with a tiny
    untrained model: publish reads files, it does not care how they were trained."""
    config = tiny_student_config(student, task)
    model_class = student.model_class(task)
    model = model_class.baseline_model(config) if baseline else model_class(config)
    model.save_pretrained(folder)
    processor_class = getattr(transformers, student.image_processor + "Pil")
    size = {"height": 28, "width": 28} if task == "image-classification" else {"shortest_edge": 64, "longest_edge": 64}
    processor_class(size=size).save_pretrained(folder)
    metric = "accuracy" if task == "image-classification" else "map"
    value = 0.5 if baseline else 0.75
    (folder / "all_results.json").write_text(
        json.dumps({f"validation_{metric}": value, f"test_{metric}": value - 0.1})
    )
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": 12, "epoch": 3.0, "log_history": []}))
    record = {
        "model": {
            "method": student.baseline if baseline else student.method,
            "task": task,
            "model_name_or_path": None,
        },
        "data": {
            "dataset_name": str(folder.parent / "emoji-demo"),
            "teacher": "mask",
            "mask_column": "mask",
            "mask_teacher_grid": 16,
            "mask_teacher_blur": 0.0,
            "mask_teacher_leak": 0.0,
        },
        "training": {"per_device_train_batch_size": 8, "learning_rate": 0.001, "alignment_weight": 1.0, "seed": 0},
    }
    (folder / "run_config.json").write_text(json.dumps(record))
    return folder


@pytest.mark.parametrize("student, task", STUDENT_TASKS, ids=IDS)
def test_every_student_publishes_with_its_card(student, task, tmp_path, caplog):
    run = fake_run(tmp_path / "run", student, task)
    baseline = fake_run(tmp_path / "baseline", student, task, baseline=True)
    stage = tmp_path / "stage"
    argv = ["publish", str(run), "--repo-id", f"org/{student.method}", "--baseline", str(baseline), "--dry-run"]
    assert cli.main([*argv, str(stage)]) == 0
    card = ModelCard.load(stage / "README.md")
    task_row, model_class = TASKS[task], student.model_class(task)
    assert card.data.pipeline_tag == task_row.pipeline_tag and card.data.base_model is None
    assert f'{task_row.auto_class}.from_pretrained("org/{student.method}"' in card.text
    assert "| base model | trained from scratch |" in card.text and "| data | emoji-demo |" in card.text
    assert "| steps | 12 |" in card.text and "| epochs | 3.00 |" in card.text and "| grid | 16 x 16 |" in card.text
    assert {r.dataset_name for r in card.data.eval_results} == {"emoji-demo"}
    source = model_class._source_name
    assert f"next to the {source} baseline trained with the same settings" in card.text and "{{" not in card.text
    metric = "accuracy" if task == "image-classification" else "map"
    assert "| validation | 0.7500 | 0.5000 |" in card.text and f"| {source} {metric} |" in card.text
    flops = hf_lfi.flop_report(model_class.config_class.from_pretrained(stage), model_class=model_class)
    assert f"| FLOPs per image | {flops['ivit_flops'] / 1e9:.2f} G vs {flops['vit_flops'] / 1e9:.2f} G" in card.text
    assert all(path.stat().st_mode & stat.S_IROTH for path in stage.iterdir())  # readable by all
    loaded = task_row.auto().from_pretrained(stage)
    assert type(loaded) is model_class
    with caplog.at_level(logging.ERROR):
        transformers.pipeline(task_row.pipeline_tag, model=str(stage))
    assert "is not supported for" not in caplog.text  # the pipeline's table of models knows the student


def test_baselines_of_another_task_or_family_are_refused(tmp_path, capsys):
    idetr = hf_lfi.students.student_for_method("idetr")
    detection = fake_run(tmp_path / "detection", idetr, "object-detection")
    segmentation_baseline = fake_run(tmp_path / "seg-baseline", idetr, "segmentation", baseline=True)
    vit_baseline = fake_run(tmp_path / "vit", hf_lfi.STUDENTS[0], "image-classification", baseline=True)
    stage = ["--repo-id", "org/x", "--dry-run", str(tmp_path / "stage")]
    assert cli.main(["publish", str(detection), "--baseline", str(segmentation_baseline), *stage]) == 2
    assert "this run is object-detection: compare runs of the same task" in capsys.readouterr().err
    assert cli.main(["publish", str(detection), "--baseline", str(vit_baseline), *stage]) == 2
    assert "is a 'vit' model, not a DETR (--method detr)" in capsys.readouterr().err


def test_publish_command_in_a_subprocess_stages_a_detection_run(tmp_path):
    icdetr = hf_lfi.students.student_for_method("icdetr")
    run = fake_run(tmp_path / "run", icdetr, "object-detection")
    done = subprocess.run(
        [HF_LFI, "publish", str(run), "--repo-id", "org/i-cdetr", "--dry-run", str(tmp_path / "stage")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "dry run: staged" in done.stdout
    config = json.loads((tmp_path / "stage" / "config.json").read_text())
    assert config["auto_map"]["AutoModelForObjectDetection"].endswith("IConditionalDetrForObjectDetection")
    assert "Few-shot VOC" in (tmp_path / "stage" / "README.md").read_text()
    image = Image.new("RGB", (48, 40), (120, 30, 30))
    detector = transformers.pipeline("object-detection", model=str(tmp_path / "stage"))
    assert isinstance(detector(image), list)
