"""`hf-lfi`: command-line tools.

    hf-lfi train --config tiny_smoke [--flag value ...]
    hf-lfi publish runs/ivit-s --repo-id org/i-vit-s [--baseline runs/vit-s] [--private] [--dry-run staging/]
    hf-lfi precompute --teacher llava-hf/llava-1.5-7b-hf --dataset zh-plus/tiny-imagenet --out maps/tiny-imagenet

`train` is the recipe (`hf_lfi.recipe`, `python -m hf_lfi.recipe`), `precompute` is `python -m hf_lfi.precompute`;
run either under `accelerate launch` for several devices.

`publish` pushes the best model of an `hf-lfi train` run of any student (its `best_model_checkpoint`, else the final
model in the run folder) with its image processor, code files (`auto_map`), metrics and a model card: task and Auto
class, overhead, teacher, training budget, the run's metrics (and the baseline run's, side by side), the data.
"""

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from huggingface_hub import HfApi, ModelCard, get_token

RUN_CONFIG_NAME = "run_config.json"  # what the recipe records of a run (hf_lfi.recipe.records)


class PublishError(RuntimeError):
    """A publish that cannot go ahead; the message says why and what to do."""


def best_checkpoint(run_dir: Path) -> Path:
    """The run's best checkpoint if the Trainer tracked one (a `checkpoint-N` folder of the run, found by name, so a
    moved run still works), else the final model saved in the run folder."""
    if (run_dir / "adapter_config.json").exists():
        raise PublishError(
            f"{run_dir} is a LoRA run: it holds an adapter (adapter_config.json), not a model. Push the adapter with "
            "`PeftModel.push_to_hub`, or merge it (`merge_and_unload()`), save the model and publish that folder."
        )
    state = run_dir / "trainer_state.json"
    if state.exists():
        best = json.loads(state.read_text()).get("best_model_checkpoint")
        if best:
            checkpoint = run_dir / Path(best).name
            if not Path(best).name.startswith("checkpoint-") or not checkpoint.is_dir():
                raise PublishError(
                    f"The best_model_checkpoint {best!r} of {state} is not a checkpoint folder of {run_dir}: "
                    "refusing to publish a model from outside the run."
                )
            return checkpoint
    if not (run_dir / "config.json").exists():
        raise PublishError(f"{run_dir} holds no model (no config.json): point at an `hf-lfi train` output folder.")
    return run_dir


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _teacher_rows(data: dict) -> dict:
    teacher = data.get("teacher")
    if teacher == "mask":
        grid = data.get("mask_teacher_grid")
        return {
            "teacher": f"mask teacher (column {data.get('mask_column')!r})",
            "grid": f"{grid} x {grid}",
            "blur_sigma": data.get("mask_teacher_blur"),
            "leak": data.get("mask_teacher_leak"),
            "wrong_object": data.get("mask_teacher_wrong"),
        }
    if teacher in ("vlm", "llava"):
        return {"teacher": f"{data.get('teacher_model_name_or_path')} (online)", "prompt": data.get("teacher_prompt")}
    return {"teacher": "precomputed maps of the interaction dataset"} if teacher else {}


def _training_rows(run_dir: Path, training: dict) -> dict:
    """The budget the run trained for (from its trainer state) and its main settings (from its record)."""
    state = _read_json(run_dir / "trainer_state.json")
    rows = {}
    if state:
        rows["steps"] = state.get("global_step")
        rows["epochs"] = f"{state.get('epoch') or 0:.2f}"
    names = {
        "per_device_train_batch_size": "batch size per device",
        "learning_rate": "learning rate",
        "alignment_weight": "alignment weight",
        "seed": "seed",
    }
    rows.update({label: training[key] for key, label in names.items() if key in training})
    return rows


def _task_model(checkpoint: Path):
    """(student, task model class) of an I-model checkpoint, from its config's `model_type` and `architectures`;
    refuses anything else with the way to publish it."""
    from .students import STUDENTS, student_for_model_type

    config = _read_json(checkpoint / "config.json")
    model_type, architectures = config.get("model_type"), config.get("architectures") or []
    student = student_for_model_type(model_type)
    if student is None:
        owners = [s for s in STUDENTS if model_type in s.source_model_types]
        hint = f" Publish the {owners[0].method} run and pass this one as --baseline." if owners else ""
        raise PublishError(
            f"{checkpoint} is a {model_type!r} model: `hf-lfi publish` publishes the runs of hf_lfi students "
            f"({', '.join(s.model_type for s in STUDENTS)}).{hint}"
        )
    named = [cls for cls in student.task_models.values() if cls.__name__ in architectures]
    return student, (named or [student.model_class()])[0]


def _check_baseline(baseline: Path, student, task: str) -> None:
    """Refuse a baseline run that is not the student's source model trained for the same task."""
    checkpoint = best_checkpoint(baseline)
    config = _read_json(checkpoint / "config.json")
    model_class = student.model_class(task)
    recorded_task = _read_json(baseline / RUN_CONFIG_NAME).get("model", {}).get("task")
    other_heads = {
        cls.__name__
        for other, task_model in student.task_models.items()
        if other != task
        for cls in (task_model, student.baseline_class(other))
    }
    if config.get("model_type") not in model_class._source_model_types:
        raise PublishError(
            f"The baseline {baseline} is a {config.get('model_type')!r} model, not a {model_class._source_name} "
            f"(--method {student.baseline})."
        )
    if recorded_task not in (None, task) or other_heads & set(config.get("architectures") or []):
        raise PublishError(
            f"The baseline {baseline} was trained for {recorded_task or config.get('architectures')}; this run is "
            f"{task}: compare runs of the same task."
        )


def _readable_by_all(folder: Path) -> None:
    """Staged files readable by everyone (some writers create 0600 files; the upload and other users read them)."""
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


def stage_run(run_dir: str | Path, repo_id: str, out_dir: str | Path, baseline: str | Path | None = None) -> ModelCard:
    """Write exactly what `publish` uploads into `out_dir`: model + code + processor, `all_results.json`, README.md."""
    from transformers import AutoImageProcessor

    import hf_lfi  # noqa: F401  (registers the I-models with the Auto classes)

    from .hub import model_card

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if out_dir.resolve().is_relative_to(run_dir.resolve()):
        raise PublishError(
            f"The staging folder {out_dir} is inside the run {run_dir}: it would overwrite the run's files."
        )
    checkpoint = best_checkpoint(run_dir)
    if (checkpoint / "adapter_config.json").exists():
        raise PublishError(f"{checkpoint} holds a LoRA adapter: push it with `PeftModel.push_to_hub` instead.")
    student, model_class = _task_model(checkpoint)
    task = student.task_of(model_class)
    results = _read_json(run_dir / "all_results.json")
    if not results:
        raise PublishError(
            f"{run_dir} has no all_results.json: evaluate the run (hf-lfi train does) before publishing."
        )
    baseline_results = None
    if baseline:
        baseline_results = _read_json(Path(baseline) / "all_results.json")
        if not baseline_results:
            raise PublishError(f"The baseline run {baseline} has no all_results.json.")
        _check_baseline(Path(baseline), student, task)
    model = model_class.from_pretrained(checkpoint)
    run_config = _read_json(run_dir / RUN_CONFIG_NAME)
    data, model_args = run_config.get("data", {}), run_config.get("model", {})
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    try:
        AutoImageProcessor.from_pretrained(checkpoint).save_pretrained(out_dir)
    except OSError:
        AutoImageProcessor.from_pretrained(run_dir).save_pretrained(out_dir)
    shutil.copy(run_dir / "all_results.json", out_dir / "all_results.json")
    card = model_card(
        model,
        repo_id,
        results=results,
        baseline_results=baseline_results,
        dataset=data.get("dataset_name"),
        interaction_dataset=data.get("interaction_dataset"),
        teacher=_teacher_rows(data),
        # a run without --model_name_or_path trained from scratch: no base model, not its own checkpoint path
        base_model=model_args.get("model_name_or_path") or ("" if run_config else None),
        training=_training_rows(run_dir, run_config.get("training", {})),
    )
    card.save(out_dir / "README.md")
    _readable_by_all(out_dir)
    return card


def publish(
    run_dir: str | Path,
    repo_id: str,
    baseline: str | Path | None = None,
    private: bool = False,
    token: str | None = None,
    dry_run: str | Path | None = None,
) -> str:
    """Stage the run and upload it to `repo_id` (or only stage it into `dry_run`); returns where it went."""
    if dry_run is not None:
        stage_run(run_dir, repo_id, dry_run, baseline)
        return str(dry_run)
    token = token or get_token()
    if token is None:
        raise PublishError("No Hugging Face token: run `hf auth login` or set HF_TOKEN. Nothing was uploaded.")
    with tempfile.TemporaryDirectory() as staging:
        stage_run(run_dir, repo_id, staging, baseline)
        try:
            api = HfApi(token=token)
            url = api.create_repo(repo_id, private=private, exist_ok=True)
            api.upload_folder(repo_id=repo_id, folder_path=staging, commit_message="Upload with hf-lfi publish")
        except Exception as error:  # HTTP, connection, offline mode, auth: one message, not a traceback
            raise PublishError(f"Could not upload {run_dir} to {repo_id}: {type(error).__name__}: {error}") from None
    return str(url)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hf-lfi", description="hf_lfi command-line tools")
    commands = parser.add_subparsers(dest="command", required=True)
    push = commands.add_parser("publish", help="push a training run's best model with its card and metrics")
    push.add_argument("run_dir", help="an `hf-lfi train` --output_dir")
    push.add_argument("--repo-id", required=True, help="the model repository, e.g. org/i-vit-s")
    push.add_argument("--baseline", help="the baseline run's folder (same task, the source model), for the results")
    push.add_argument("--private", action="store_true")
    push.add_argument("--token", help="a Hugging Face token (default: the logged-in one)")
    push.add_argument("--dry-run", metavar="DIR", help="write what would be uploaded into DIR, upload nothing")
    commands.add_parser("train", add_help=False, help="train a student or its baseline (hf_lfi.recipe; --help)")
    commands.add_parser("precompute", add_help=False, help="teacher interaction maps of a dataset (hf_lfi.precompute)")
    args, rest = parser.parse_known_args(argv)
    if args.command == "train":
        from .modeling.name_or_path import NameOrPathError
        from .recipe import main as train

        try:
            train(rest)
        except (ValueError, FileNotFoundError, NameOrPathError) as error:  # flags, names, data, records: one line
            print(f"hf-lfi train: {error}", file=sys.stderr)
            return 2
        return 0
    if args.command == "precompute":
        from .precompute import main as precompute

        return precompute(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        where = publish(args.run_dir, args.repo_id, args.baseline, args.private, args.token, args.dry_run)
    except PublishError as error:
        print(f"hf-lfi publish: {error}", file=sys.stderr)
        return 2
    if args.dry_run is not None:
        print(f"dry run: staged {args.run_dir} into {where}; nothing was uploaded")
    else:
        print(f"published {args.run_dir} -> {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
