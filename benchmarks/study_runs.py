"""What the benchmark studies (transfer_study.py, reproduce.py, gate_study.py) share: the recipe flags of one small
CPU run, one process per run (one thread, its log and pid in the run's folder) that resumes an interrupted run from its
newest checkpoint and never trains a finished one again, a finished run's records (accuracies, validation curve), the
closeness of its attention to the masks, and mean ± std over seeds."""

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

SPLITS = ("validation", "test_iid", "test_shifted")
RUN_RECORD = "run.json"  # written by a study's worker when its run has ended; a run without it is not finished


def recipe_flags(
    data: str,
    output_dir: Path,
    seed: int,
    steps: int,
    *,
    ratio: float = 1.0,
    warmup: int = 20,
    evaluations: int = 0,
    test_splits=(),
) -> list[str]:
    """`hf-lfi train` flags of one run on CPU: batch 64, AdamW (lr 1e-3, weight decay 0.05), a linear warmup of
    `warmup` steps then a cosine decay over `steps`, crops of at least half the image. `evaluations` > 0: validation
    that many times over the budget, each with a checkpoint to resume from; 0: validation once, at the end."""
    every = max(1, steps // evaluations) if evaluations else 20
    schedule = ["--eval_strategy", "steps", "--eval_steps", str(every)] if evaluations else ["--eval_strategy", "no"]
    saving = ["--save_strategy", "steps", "--save_steps", str(every), "--save_total_limit", "1"]
    flags = [
        "--dataset_name",
        data,
        "--output_dir",
        str(output_dir),
        "--seed",
        str(seed),
        "--max_steps",
        str(steps),
        "--per_device_train_batch_size",
        "64",
        "--per_device_eval_batch_size",
        "256",
        "--learning_rate",
        "1e-3",
        "--weight_decay",
        "0.05",
        "--warmup_steps",
        str(warmup),
        "--lr_scheduler_type",
        "cosine",
        "--crop_scale_min",
        "0.5",
        *schedule,
        *(saving if evaluations else ["--save_strategy", "no"]),
        "--logging_steps",
        str(every),
        "--report_to",
        "none",
        "--disable_tqdm",
        "true",
        "--log_level",
        "error",
        "--use_cpu",
        "true",
        "--dataloader_num_workers",
        "0",
        "--data_ratio",
        str(ratio),
    ]
    return flags + (["--test_splits", *test_splits] if test_splits else [])


def finished(run_dir: Path) -> dict | None:
    """The record of a finished run, else None."""
    path = run_dir / RUN_RECORD
    return json.loads(path.read_text()) if path.exists() else None


def running_elsewhere(run_dir: Path) -> bool:
    """Another invocation of a study is running this run: its worker's pid is alive and is that worker (a pid the
    system gave to another process since is not)."""
    marker = run_dir / "worker.pid"
    command = Path(f"/proc/{marker.read_text().strip()}/cmdline") if marker.exists() else None
    try:
        return command is not None and run_dir.name.encode() in command.read_bytes()
    except OSError:  # the process has ended
        return False


def resume_flags(run_dir: Path) -> list[str]:
    """The recipe flags that continue what `run_dir` holds: nothing for a new run, `--resume_from_checkpoint latest`
    for an interrupted run with a complete checkpoint, `--overwrite_output_dir` for one interrupted before its first
    checkpoint (its records describe no finished run). A finished run is an error: it is never trained again."""
    from hf_lfi.recipe.records import run_files
    from hf_lfi.training import last_complete_checkpoint

    if finished(run_dir) is not None:
        raise ValueError(f"{run_dir} holds a finished run ({RUN_RECORD}); it is not trained again.")
    if last_complete_checkpoint(str(run_dir)) is not None:
        return ["--resume_from_checkpoint", "latest"]
    return ["--overwrite_output_dir", "true"] if run_files(str(run_dir)) else []


def start_worker(script: str, job: dict, run_dir: Path, arguments: list[str]) -> subprocess.Popen:
    """`python script --job JOB *arguments` in a process of its own (one thread), logging to `run_dir/worker.log`
    and leaving its pid in `run_dir/worker.pid`."""
    run_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, script, "--job", json.dumps(job), *arguments]
    with open(run_dir / "worker.log", "a") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    (run_dir / "worker.pid").write_text(str(process.pid))
    return process


def read_run(output_dir: Path) -> dict:
    """A finished recipe run's accuracies per split, validation curve [(step, accuracy)] and training time."""
    results = json.loads((output_dir / "all_results.json").read_text())
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    curve = [(e["step"], e["eval_accuracy"]) for e in history if "eval_accuracy" in e]
    return {
        "accuracy": {split: results.get(f"{split}_accuracy") for split in SPLITS},
        "curve": curve,
        "train_runtime": results.get("train_runtime"),
    }


def human_alignment(model_dir: Path, data, num_images: int, mask_teacher: bool) -> dict:
    """Per layer: cosine / IoU-at-top-k between the masks and C_VFM, C_AGT (I-ViT), and the mean gates (g1, g2); the
    ViT baseline's C_VFM is its own CLS attention (eager `output_attentions`). With the mask teacher, also the teacher
    maps against the same masks."""
    import numpy as np
    import torch
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    import hf_lfi
    from hf_lfi import metrics
    from hf_lfi.interactions import mask_to_interaction_map

    alignment = metrics.load("interaction_alignment")
    model = AutoModelForImageClassification.from_pretrained(model_dir).eval()
    processor = AutoImageProcessor.from_pretrained(model_dir)
    rows = data.select(range(min(num_images, len(data))))
    masks = [np.array(mask) for mask in rows["mask"]]
    pixel_values = processor([image.convert("RGB") for image in rows["image"]], return_tensors="pt")["pixel_values"]

    def score(maps) -> dict:
        return alignment.compute(predictions=[m.numpy() for m in maps], references=masks)

    out: dict = {"layers": {}}
    with torch.no_grad():
        if isinstance(model, hf_lfi.IViTForImageClassification):
            maps = {}
            for source in ("interaction", "original"):  # read the student map from C_AGT, then from C_VFM
                model.config.student_map_source = source
                outputs = model(pixel_values, output_interactions=True)
                maps[source] = outputs.interaction_maps
            for position, layer in enumerate(model.config.interaction_layer_indices):
                gates = outputs.gates[position]  # [images, heads, 2]: spread over images and heads
                g1, g2 = gates.mean(dim=(0, 1)).tolist()
                g1_std, g2_std = gates.flatten(0, 1).std(dim=0).tolist()
                out["layers"][layer] = {
                    "C_VFM": score(maps["original"][position]),
                    "C_AGT": score(maps["interaction"][position]),
                    "gates": {"g1": g1, "g2": g2, "g1_std": g1_std, "g2_std": g2_std},
                }
        else:
            model.set_attn_implementation("eager")
            for layer, attention in enumerate(model(pixel_values, output_attentions=True).attentions):
                cls_rows = attention[:, :, 0, 1:].mean(1)
                side = int(round(cls_rows.shape[-1] ** 0.5))
                out["layers"][layer] = {
                    "C_VFM": score((cls_rows / cls_rows.sum(-1, keepdim=True)).view(-1, side, side))
                }
    if mask_teacher:
        out["teacher"] = score([mask_to_interaction_map(mask, (24, 24)) for mask in masks])
    return out


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fmt(values: list[float], digits: int = 3) -> str:
    mean, std = mean_std(values)
    return "n/a" if mean is None else f"{mean:.{digits}f} ± {std:.{digits}f}"
