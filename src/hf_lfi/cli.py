"""`hf-lfi`: command-line tools.

    hf-lfi publish runs/ivit-s --repo-id org/i-vit-s [--baseline runs/vit-s] [--private] [--dry-run staging/]
    hf-lfi precompute --teacher llava-hf/llava-1.5-7b-hf --dataset zh-plus/tiny-imagenet --out maps/tiny-imagenet

`precompute` is `python -m hf_lfi.precompute` (see there; run it under `accelerate launch` for several devices).

`publish` pushes the best model of a `training/run.py` run (its `best_model_checkpoint`, else the final model in the
run folder) with its image processor, code files (`auto_map`), metrics and a model card: overhead, teacher, the
run's accuracies (and the baseline run's, side by side), the interaction dataset's id.
"""

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from huggingface_hub import HfApi, ModelCard, get_token

RUN_CONFIG_NAME = "run_config.json"  # written by training/run.py: its model and data arguments


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
        raise PublishError(f"{run_dir} holds no model (no config.json): point at a training/run.py output folder.")
    return run_dir


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _teacher_rows(data: dict) -> dict:
    teacher = data.get("teacher")
    if teacher == "mask":
        return {
            "teacher": f"mask teacher (column {data.get('mask_column')!r})",
            "grid": data.get("mask_teacher_grid"),
            "blur_sigma": data.get("mask_teacher_blur"),
            "leak": data.get("mask_teacher_leak"),
            "wrong_object": data.get("mask_teacher_wrong"),
        }
    if teacher == "llava":
        return {"teacher": f"{data.get('teacher_model_name_or_path')} (online)", "prompt": data.get("teacher_prompt")}
    return {"teacher": "precomputed maps of the interaction dataset"} if teacher else {}


def stage_run(run_dir: str | Path, repo_id: str, out_dir: str | Path, baseline: str | Path | None = None) -> ModelCard:
    """Write exactly what `publish` uploads into `out_dir`: model + code + processor, `all_results.json`, README.md."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

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
    model_type = json.loads((checkpoint / "config.json").read_text()).get("model_type")
    if model_type != "ivit":
        raise PublishError(
            f"{checkpoint} is a {model_type!r} model: `hf-lfi publish` publishes I-ViT runs. Publish the I-ViT run and "
            "pass this one as --baseline" + (" (a ViT baseline run)." if model_type == "vit" else ".")
        )
    model = AutoModelForImageClassification.from_pretrained(checkpoint)
    run_config = _read_json(run_dir / RUN_CONFIG_NAME)
    data, model_args = run_config.get("data", {}), run_config.get("model", {})
    results = _read_json(run_dir / "all_results.json")
    if not results:
        raise PublishError(
            f"{run_dir} has no all_results.json: evaluate the run (training/run.py does) before publishing."
        )
    baseline_results = _read_json(Path(baseline) / "all_results.json") if baseline else None
    if baseline and not baseline_results:
        raise PublishError(f"The baseline run {baseline} has no all_results.json.")
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
    )
    card.save(out_dir / "README.md")
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
    push.add_argument("run_dir", help="a training/run.py --output_dir")
    push.add_argument("--repo-id", required=True, help="the model repository, e.g. org/i-vit-s")
    push.add_argument("--baseline", help="the ViT baseline's run folder, for the results table")
    push.add_argument("--private", action="store_true")
    push.add_argument("--token", help="a Hugging Face token (default: the logged-in one)")
    push.add_argument("--dry-run", metavar="DIR", help="write what would be uploaded into DIR, upload nothing")
    commands.add_parser("precompute", add_help=False, help="teacher interaction maps of a dataset (hf_lfi.precompute)")
    args, rest = parser.parse_known_args(argv)
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
