"""The records of a run never lie: an output folder holding a run is not trained into again by accident,
`run_config.json` (what `hf-lfi publish` puts on the card) is written once the arguments, data and model are
checked and never over another run's, and a resume that would change the model is refused."""

import json
import logging
import os
import re
import shutil
from dataclasses import asdict

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..cli import RUN_CONFIG_NAME
from ..training import last_complete_checkpoint

logger = logging.getLogger(__name__)

_CHECKPOINT = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-\d+$")
# what a run writes into its output folder besides checkpoints (removed by --overwrite_output_dir)
_RUN_FILES = (RUN_CONFIG_NAME, "trainer_state.json", "all_results.json", "train_results.json", "README.md")
# config.json entries that describe the checkpoint or are set while training (the loss type, the Trainer's cache
# switch), not the model
_CHECKPOINT_ONLY_KEYS = {
    "_name_or_path",
    "architectures",
    "transformers_version",
    "dtype",
    "torch_dtype",
    "auto_map",
    "problem_type",
    "use_cache",
}
# training arguments that do not change what is trained: where and how often to log, save and evaluate
_BOOKKEEPING = re.compile(
    r"^(output_dir|overwrite_output_dir|resume_from_checkpoint|run_name|project|logging_.*|log_.*|report_to|"
    r"save_.*|eval_.*|per_device_eval_batch_size|push_to_hub|hub_.*|disable_tqdm|dataloader_.*|do_.*|"
    r"load_best_model_at_end|metric_for_best_model|greater_is_better|local_rank|use_cpu|trackio_.*|"
    r"include_.*|prediction_loss_only|batch_eval_metrics|skip_memory_metrics|ddp_.*|max_eval_samples|"
    r"test_splits|eval_split|top_k)$"
)


def run_files(output_dir: str) -> list[str]:
    """The checkpoints (by step) and run records in `output_dir`."""
    if not os.path.isdir(output_dir):
        return []
    names = os.listdir(output_dir)
    steps = sorted((int(name.rsplit("-", 1)[1]), name) for name in names if _CHECKPOINT.match(name))
    return [name for _, name in steps] + sorted(name for name in names if name in _RUN_FILES)


def check_output_dir(training_args) -> str | None:
    """The checkpoint to resume from (`--resume_from_checkpoint`: a folder, or `latest` / `true` for the newest
    complete one), or None for a new run; a new run into a folder that holds one is refused unless
    `--overwrite_output_dir`."""
    output_dir, checkpoint = training_args.output_dir, training_args.resume_from_checkpoint
    if checkpoint in ("latest", "true", "True"):
        checkpoint = last_complete_checkpoint(output_dir)
        if checkpoint is None:
            raise ValueError(f"--resume_from_checkpoint latest: no complete checkpoint in {output_dir}.")
        return checkpoint
    if checkpoint is not None:
        if not os.path.isdir(checkpoint):
            raise ValueError(f"--resume_from_checkpoint {checkpoint}: no such checkpoint folder.")
        return checkpoint
    found = run_files(output_dir)
    if found and training_args.do_train and not training_args.overwrite_output_dir:
        raise ValueError(
            f"{output_dir} already holds a run ({', '.join(found[:4])}{', ...' if len(found) > 4 else ''}). Resume it "
            "with --resume_from_checkpoint latest, replace it with --overwrite_output_dir (its checkpoints and "
            "records are removed), or choose another --output_dir."
        )
    return None


def _flat_differences(recorded: dict, now: dict) -> dict[str, tuple]:
    return {
        key: (recorded.get(key), now.get(key))
        for key in sorted(set(recorded) | set(now))
        if recorded.get(key) != now.get(key)
    }


def check_resume(checkpoint: str, model, record: dict, output_dir: str) -> dict[str, tuple]:
    """Refuse resuming `checkpoint` with a model whose configuration differs from the checkpoint's (naming the
    keys); warn, listing them, when the run's other settings differ from those it recorded. Returns the changed
    settings {name: (recorded, now)}."""
    config_file = os.path.join(checkpoint, "config.json")
    if os.path.isfile(config_file):  # a LoRA checkpoint holds an adapter, no config.json
        with open(config_file) as file:
            saved = {k: v for k, v in json.load(file).items() if k not in _CHECKPOINT_ONLY_KEYS}
        current = {
            k: v for k, v in json.loads(model.config.to_json_string()).items() if k not in _CHECKPOINT_ONLY_KEYS
        }
        differing = _flat_differences(saved, current)
        if differing:
            listed = "; ".join(f"{k}: {old!r} in the checkpoint, {new!r} now" for k, (old, new) in differing.items())
            raise ValueError(
                f"Cannot resume {checkpoint}: the model configured now differs from the checkpoint's in {listed}. "
                "Resume with the run's own settings, or start a new run (another --output_dir)."
            )
    recorded = read_run_config(output_dir) or {}
    changed = {}
    for group in ("model", "data", "training"):
        for key, values in _flat_differences(recorded.get(group, {}), record[group]).items():
            if not _BOOKKEEPING.match(key):
                changed[key] = values
    if recorded and changed:
        logger.warning(
            "Resuming %s with other settings than the run recorded in %s: %s.",
            checkpoint,
            RUN_CONFIG_NAME,
            "; ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changed.items()),
        )
    return changed if recorded else {}


def run_record(model_args, data_args, training_args) -> dict:
    """What `run_config.json` holds: every model, data and training argument of the run (tokens masked)."""
    return {"model": asdict(model_args), "data": asdict(data_args), "training": training_args.to_dict()}


def read_run_config(output_dir: str) -> dict | None:
    path = os.path.join(output_dir, RUN_CONFIG_NAME)
    if not os.path.isfile(path):
        return None
    with open(path) as file:
        return json.load(file)


def write_run_config(output_dir: str, record: dict, resumed_from: str | None = None, changed: dict | None = None):
    """Write the run's `run_config.json`. A new run first removes the checkpoints and records of the run it replaces
    (reached only with --overwrite_output_dir); a resume keeps the run's record and appends the resume, with the
    settings it changed, to its `resumes`."""
    os.makedirs(output_dir, exist_ok=True)
    recorded = read_run_config(output_dir)
    if resumed_from is None:
        for name in run_files(output_dir):
            path = os.path.join(output_dir, name)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    elif recorded is not None:
        changed = {key: {"recorded": old, "now": new} for key, (old, new) in (changed or {}).items()}
        recorded.setdefault("resumes", []).append({"checkpoint": os.path.basename(resumed_from), "changed": changed})
        record = recorded
    path = os.path.join(output_dir, RUN_CONFIG_NAME)
    with open(path + ".tmp", "w") as file:
        json.dump(record, file, indent=2)
    os.replace(path + ".tmp", path)


__all__ = [
    "RUN_CONFIG_NAME",
    "check_output_dir",
    "check_resume",
    "read_run_config",
    "run_files",
    "run_record",
    "write_run_config",
]
