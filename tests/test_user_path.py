"""The path a user walks, for every student and task of the registry, with the console commands in subprocesses from
a folder outside the repository: `hf-lfi train` on the shipped demo set, `hf-lfi publish` to a Hub (the test Hub
server, a real upload), then the model loaded back by its repo id with the task's Auto class, `AutoModel` and the
task's pipeline. The I-ViT path runs by default; every other student behind the `slow` marker (about a minute each)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers
from PIL import Image

import hf_lfi
from hf_lfi.students import TASKS

HF_LFI = str(Path(sys.executable).parent / "hf-lfi")
VISION = "hidden_size=32,num_hidden_layers=2,num_attention_heads=4,image_size=28,patch_size=7"
# what makes each student tiny: a config override or a shipped preset, and the detection data's single-object boxes
SHAPES = {
    "ivit": ["--config_overrides", f"{VISION},intermediate_size=37"],
    "idinov2": ["--config_overrides", VISION],
    "isiglip": ["--config_overrides", f"{VISION},intermediate_size=37"],
    "idetr": ["--config_name", "idetr-small", "--bbox_column", "bbox"],
    "icdetr": ["--config_name", "icdetr-small", "--bbox_column", "bbox"],
}
TASK_ARGS = {
    "image-classification": [],
    "object-detection": ["--detection_shortest_edge", "64", "--detection_longest_edge", "64"],
    "segmentation": ["--detection_shortest_edge", "64", "--detection_longest_edge", "64"],
}
STUDENT_TASKS = [
    pytest.param(
        student, task, id=f"{student.method}-{task}", marks=() if student.method == "ivit" else pytest.mark.slow
    )
    for student in hf_lfi.STUDENTS
    for task in student.tasks
]


def run(command: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    done = subprocess.run([HF_LFI, *command], capture_output=True, text=True, cwd=cwd, env=env)
    assert done.returncode == 0, f"hf-lfi {command[0]} failed:\n{done.stderr[-3000:]}"
    return done


@pytest.mark.parametrize("student, task", STUDENT_TASKS)
def test_train_publish_and_load_back_by_repo_id(student, task, hub_server, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    shape = SHAPES[student.method] + (["--config_name", "idetr-seg-small"] if task == "segmentation" else [])
    if task == "segmentation":
        shape = ["--bbox_column", "bbox", "--instance_mask_column", "mask", *shape[-2:]]
    train = [
        *("train", "--method", student.method, "--task", task, "--dataset_name", "hf_lfi:emoji-shift-demo"),
        *("--teacher", "mask", "--mask_teacher_grid", "8", "--output_dir", "runs/student", "--report_to", "none"),
        *("--max_steps", "2", "--max_train_samples", "8", "--max_eval_samples", "4", "--eval_strategy", "no"),
        *("--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4", "--use_cpu", "true"),
        *shape,
        *TASK_ARGS[task],
    ]
    run(train, work, hub_server.env)
    repo_id = f"org/{student.method}-{task}"
    pushed = run(["publish", "runs/student", "--repo-id", repo_id], work, hub_server.env)
    assert repo_id in pushed.stdout

    files = hub_server.files(repo_id)
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md"} <= set(files)
    assert "](interaction_maps.png)" in files["README.md"].decode() and "interaction_maps.png" in files  # the figure
    config = json.loads(files["config.json"])
    task_row, model_class = TASKS[task], student.model_class(task)
    assert config["auto_map"][task_row.auto_class].endswith(model_class.__name__)  # remote code for non-pip users
    assert f'{task_row.auto_class}.from_pretrained("{repo_id}"' in files["README.md"].decode()

    loaded = task_row.auto().from_pretrained(repo_id)
    local = model_class.from_pretrained(work / "runs" / "student")
    assert type(loaded) is model_class
    assert loaded.state_dict().keys() == local.state_dict().keys()
    assert all(torch.equal(value, local.state_dict()[name]) for name, value in loaded.state_dict().items())
    base = transformers.AutoModel.from_pretrained(repo_id)
    assert type(base) is student.base_model

    image = Image.new("RGB", (48, 40), (30, 120, 30))
    predictions = transformers.pipeline(task_row.pipeline_tag, model=repo_id)(image)
    assert isinstance(predictions, list)
