"""`hf-lfi`: command-line tools.

    hf-lfi train --config tiny_smoke [--flag value ...]
    hf-lfi publish runs/ivit-s --repo-id org/i-vit-s [--baseline runs/vit-s] [--private] [--dry-run staging/]
    hf-lfi precompute --teacher llava-hf/llava-1.5-7b-hf --dataset zh-plus/tiny-imagenet --out maps/tiny-imagenet
    hf-lfi explore runs/ivit-s --dataset ../shared/data/emoji-shift --split validation --teacher mask [--port 7860]

`explore` serves a web page of the model's maps per layer next to the teacher's (`hf_lfi.explore`; needs the
`[explore]` extra, Gradio) on 127.0.0.1.

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
        processor = AutoImageProcessor.from_pretrained(checkpoint)
    except OSError:
        processor = AutoImageProcessor.from_pretrained(run_dir)
    processor.save_pretrained(out_dir)
    shutil.copy(run_dir / "all_results.json", out_dir / "all_results.json")
    figure, caption = _card_figure(model, processor, checkpoint, data, out_dir)
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
        figure=figure,
        figure_caption=caption,
    )
    card.save(out_dir / "README.md")
    _readable_by_all(out_dir)
    return card


def _card_figure(model, processor, checkpoint: Path, data: dict, out_dir: Path) -> tuple[str | None, str | None]:
    """The card's figure of teacher vs student maps on the run's evaluation split (`hf_lfi.explore.card`), written
    into `out_dir`: (its file name, its caption), or (None, None) with the reason on stderr when the run's data
    cannot be read here."""
    from .explore import ExploreError, ExploreSettings
    from .explore.card import CARD_FIGURE_NAME, write_card_figure
    from .explore.explorer import MASK_TEACHER

    dataset = data.get("interaction_dataset") or data.get("dataset_name")
    if not dataset:
        print("hf-lfi publish: no figure in the card: the run records no dataset.", file=sys.stderr)
        return None, None
    settings = ExploreSettings(
        str(checkpoint),
        dataset=dataset,
        split=data.get("eval_split") or "validation",
        teacher=MASK_TEACHER if data.get("teacher") == "mask" else None,
        image_column=data.get("image_column", "image"),
        label_column=data.get("label_column", "label"),
        mask_column=data.get("mask_column", "mask"),
        mask_teacher_grid=data.get("mask_teacher_grid", 24),
    )
    try:
        caption = write_card_figure(model, processor, settings, out_dir / CARD_FIGURE_NAME)
    except (ExploreError, OSError, ValueError) as error:
        print(f"hf-lfi publish: no figure in the card: {error}", file=sys.stderr)
        return None, None
    return CARD_FIGURE_NAME, caption


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


def _explore(args) -> int:
    try:
        from .explore.app import build_app
    except ImportError as error:
        print(f"hf-lfi explore needs Gradio ({error}): pip install 'hf_lfi[explore]'", file=sys.stderr)
        return 2
    from .explore import ExploreSettings

    settings = ExploreSettings(
        args.model,
        dataset=args.dataset,
        split=args.split,
        baseline=args.baseline,
        teacher=args.teacher,
        num_images=args.num_images,
        image_column=args.image_column,
        label_column=args.label_column,
        mask_column=args.mask_column,
        map_column=args.map_column,
        teacher_prompt=args.prompt,
        mask_teacher_grid=args.mask_teacher_grid,
    )
    build_app(settings).launch(server_name="127.0.0.1", server_port=args.port)
    return 0


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
    explore = commands.add_parser("explore", help="a web page of the model's maps, gates and teacher maps (Gradio)")
    explore.add_argument("model", help="an I-model folder (a training run's output folder) or Hub id")
    explore.add_argument("--dataset", help="a dataset folder or Hub id whose images to show")
    explore.add_argument("--split", default="validation", help="the dataset split (default: validation)")
    explore.add_argument("--baseline", help="a plain model (folder or Hub id) whose prediction to show alongside")
    explore.add_argument(
        "--teacher",
        help="'mask': a mask teacher from the dataset's mask column; a VLM (folder or Hub id) asked online; default: "
        "the dataset's interaction_map column",
    )
    explore.add_argument("--port", type=int, default=7860, help="the port on 127.0.0.1 (default: 7860)")
    explore.add_argument("--num-images", type=int, default=32, help="rows of the split shown (default: 32)")
    explore.add_argument("--image-column", default="image")
    explore.add_argument("--label-column", default="label")
    explore.add_argument("--mask-column", default="mask", help="ground-truth masks: the mask teacher, IoU with masks")
    explore.add_argument("--map-column", default="interaction_map", help="the teacher maps of the dataset")
    explore.add_argument(
        "--prompt",
        default="classification_fg_bg",
        help="the online VLM teacher's prompt (hf_lfi PROMPTS), as precompute",
    )
    explore.add_argument(
        "--mask-teacher-grid", type=int, default=24, help="cells a side of the mask teacher's maps (default: 24)"
    )
    args, rest = parser.parse_known_args(argv)
    if args.command == "train":
        from .modeling.name_or_path import NameOrPathError
        from .recipe import main as train
        from .training.finite import NonFiniteTrainingError

        try:
            train(rest)
        except (ValueError, FileNotFoundError, NameOrPathError, NonFiniteTrainingError) as error:  # one line each
            print(f"hf-lfi train: {error}", file=sys.stderr)
            return 2
        return 0
    if args.command == "precompute":
        from .precompute import main as precompute

        return precompute(rest)
    if args.command == "explore" and not rest:
        return _explore(args)
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
