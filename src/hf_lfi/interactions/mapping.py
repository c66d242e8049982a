"""`datasets` map functions that add teacher interaction maps to an image dataset (architecture.md decision 4),
and a resumable precompute for large splits.

The result has three columns the `InteractionTrainer` reads: `interaction_map` (float16, teacher grid of any
(rows, cols)), `interaction_valid` (bool: False rows get no alignment loss) and `interaction_status` (why a row is
invalid); the VLM map functions add provenance columns (`interaction_prompt`, `interaction_answer`,
`interaction_foreground`, `interaction_background`). Every map function declares the `features` of its columns
(`map_fn.output_features(ds.features)`, which `precompute_interactions` passes) and returns columns typed by their
values (float16 maps, word lists as numpy string arrays even when empty), so a plain `ds.map(map_fn, batched=True)`
infers the same types whatever its first batch holds.
The map functions are picklable classes, so `Dataset.map` fingerprints and caches them; a VLM map function pickles
as the identity of its teacher (name and `weights_fingerprint`) and settings, not its weights (run it with
`num_proc=1`: the model stays in the process).
"""

import json
import os
import shutil
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from accelerate import PartialState
from datasets import Dataset, Features, List, Value, concatenate_datasets, load_from_disk
from datasets.fingerprint import Hasher
from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
from tqdm.auto import tqdm

from ..columns import require_columns
from .fingerprint import weights_fingerprint
from .maps import check_mask_teacher, mask_to_interaction_map
from .prompts import check_class_names
from .teacher import InteractionExtractor, TeacherInteraction

STATUS_OK = "ok"
STATUS_EMPTY_MASK = "empty_mask"
MAP_FEATURES = Features(
    {
        "interaction_map": List(List(Value("float16"))),
        "interaction_valid": Value("bool"),
        "interaction_status": Value("string"),
        "interaction_teacher": Value("string"),
    }
)
TEACHER_FEATURES = Features(
    {
        **MAP_FEATURES,
        "interaction_prompt": Value("string"),
        "interaction_answer": Value("string"),
        "interaction_foreground": List(Value("string")),
        "interaction_background": List(Value("string")),
    }
)


def _typed(values: list, feature) -> np.ndarray | list:
    """A column whose Arrow type `datasets` infers as `feature` even when it holds no value to infer it from: a batch
    of empty word lists would otherwise become a list of nulls, which a later batch of words cannot be cast to. Word
    lists become numpy string arrays; the other columns always hold a value that types them (the maps are float16
    arrays) and stay Python values, as a streamed `IterableDataset.map` hands them on."""
    if isinstance(feature, List) and isinstance(feature.feature, Value) and feature.feature.dtype == "string":
        column = np.empty(len(values), dtype=object)
        column[:] = [np.array(words, dtype=np.str_) for words in values]
        return column
    return values


class _DeclaredFeatures:
    """The `features` of the columns a map function adds, and of the whole mapped dataset; checks of its batches."""

    features: Features = MAP_FEATURES

    def output_features(self, input_features: Features) -> Features:
        """`features=` for `Dataset.map(self, ...)`: the input columns' features, then the interaction columns'."""
        return Features({**{k: v for k, v in input_features.items() if k not in self.features}, **self.features})

    def _typed_columns(self, columns: dict) -> dict:
        return {name: _typed(values, self.features[name]) for name, values in columns.items()}

    def _check_batched(self, batch: dict, column: str) -> None:
        """A map function maps batches: a single row's value means `Dataset.map` was called without batched=True."""
        require_columns(batch, column)
        if not isinstance(batch[column], (list, tuple, np.ndarray, torch.Tensor)):
            raise ValueError(
                f"{type(self).__name__} maps batches, but got one row (column {column!r} holds a "
                f"{type(batch[column]).__name__}): call Dataset.map(map_fn, batched=True)."
            )


class MaskInteractionMapFn(_DeclaredFeatures):
    """Batched map function of a *mask teacher*: `ds.map(MaskInteractionMapFn(grid=(24, 24)), batched=True)`.

    Every row's segmentation mask becomes its teacher map (`mask_to_interaction_map`); a mask without foreground
    gives an all-zero map with `interaction_valid=False` and status `"empty_mask"`. `blur_sigma` and `leak` degrade
    every map (see `mask_to_interaction_map`); `wrong_object` is the share of rows whose map points at another row's
    object instead of their own: the rows are spread evenly over each batch of the map (row k of n is wrong when
    floor((k + 1) * share) > floor(k * share)) and take the mask of the row half a batch away (a one-row batch: its own
    mask turned by 180 degrees), so the map has an object's shape but mostly lies on the background.
    """

    def __init__(
        self,
        mask_column: str = "mask",
        grid: tuple[int, int] = (24, 24),
        blur_sigma: float = 0.0,
        leak: float = 0.0,
        wrong_object: float = 0.0,
    ):
        if not 0 <= wrong_object <= 1:
            raise ValueError(f"wrong_object is a share of rows in [0, 1], got {wrong_object}.")
        self.mask_column = mask_column
        self.grid, self.blur_sigma, self.leak = check_mask_teacher(grid, blur_sigma, leak)
        self.wrong_object = wrong_object

    def provenance(self) -> dict:
        """What produced the maps, for the dataset card."""
        return {
            "teacher": f"mask teacher (column {self.mask_column!r})",
            "grid": f"{self.grid[0]} x {self.grid[1]}",
            "blur_sigma": self.blur_sigma,
            "leak": self.leak,
            "wrong_object": self.wrong_object,
            "dtype": "float16",
        }

    def _pointed_masks(self, masks: list) -> list:
        """Each row's mask, or for the `wrong_object` share of rows the mask of the row half a batch away."""
        count = len(masks)
        pointed = list(masks)
        for k in range(count):
            if int((k + 1) * self.wrong_object) > int(k * self.wrong_object):
                other = masks[(k + count // 2) % count]
                pointed[k] = np.asarray(other)[::-1, ::-1] if count == 1 else other
        return pointed

    def __call__(self, batch: dict) -> dict:
        if self.mask_column not in batch:
            raise ValueError(f"The dataset has no mask column {self.mask_column!r} (columns: {sorted(batch)}).")
        self._check_batched(batch, self.mask_column)
        masks = self._pointed_masks(batch[self.mask_column]) if self.wrong_object > 0 else batch[self.mask_column]
        maps = [mask_to_interaction_map(m, self.grid, self.blur_sigma, self.leak) for m in masks]
        valid = [bool(m.sum() > 0) for m in maps]
        return self._typed_columns(
            {
                "interaction_map": [m.numpy().astype(np.float16) for m in maps],
                "interaction_valid": valid,
                "interaction_status": [STATUS_OK if v else STATUS_EMPTY_MASK for v in valid],
                "interaction_teacher": [json.dumps(self.provenance())] * len(maps),
            }
        )


class _TeacherMapFn(_DeclaredFeatures):
    """Shared by the VLM map functions: output columns, provenance and a weight-free pickled identity."""

    features = TEACHER_FEATURES

    def __init__(self, extractor: InteractionExtractor, image_column: str):
        self.extractor = extractor
        self.image_column = image_column
        self._identity = self._describe(extractor)

    def _describe(self, extractor: InteractionExtractor) -> dict:
        model = extractor.model
        return {
            "teacher": model.config._name_or_path or type(model).__name__,
            "teacher_revision": getattr(model.config, "_commit_hash", None),
            "teacher_weights_sha256": weights_fingerprint(model),
            "prompt": extractor.prompt.name,
            "question": extractor.prompt.question,
            "layers": extractor.layers,
            "head_reduction": extractor.head_reduction,
            "max_new_tokens": extractor.max_new_tokens,
            "accept_unlisted_foreground": extractor.accept_unlisted_foreground,
            "image_preprocessing": "padded to a square with the processor's mean colour; map cut back to the image",
            "dtype": "float16",
        }

    def provenance(self) -> dict:
        """What produced the maps, for the dataset card."""
        return dict(self._identity)

    def __getstate__(self):
        # fingerprinting pickles the function: hash the teacher's identity and settings, never its weights
        return {key: value for key, value in self.__dict__.items() if key != "extractor"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.extractor = None

    def _check(self, batch: dict, columns: Sequence[str]) -> None:
        if self.extractor is None:
            raise RuntimeError(
                "This map function was unpickled without its teacher model: run Dataset.map with num_proc=1."
            )
        require_columns(batch, *columns)
        self._check_batched(batch, self.image_column)

    def _columns(self, results: list[TeacherInteraction]) -> dict:
        return self._typed_columns(
            {
                "interaction_map": [r.interaction_map for r in results],
                "interaction_valid": [r.valid for r in results],
                "interaction_status": [r.status for r in results],
                "interaction_prompt": [self.extractor.prompt.name] * len(results),
                "interaction_answer": [r.answer for r in results],
                "interaction_foreground": [r.foreground for r in results],
                "interaction_background": [r.background for r in results],
                "interaction_teacher": [json.dumps(self.provenance())] * len(results),
            }
        )


class InteractionMapFn(_TeacherMapFn):
    """Batched map function of a classification teacher (Eq. 11):
    `ds.map(InteractionMapFn(extractor, class_names=names), batched=True, batch_size=16, features=...)`.

    `answer_column` names a column of answers to read instead of generating them (e.g. the `interaction_answer`
    of an earlier run, to recompute maps with other layers or another head reduction).
    """

    def __init__(
        self,
        extractor: InteractionExtractor,
        class_names: Sequence[str] | None = None,
        image_column: str = "image",
        answer_column: str | None = None,
    ):
        if extractor.prompt.task != "classification":
            raise ValueError(f"InteractionMapFn needs a classification prompt, got {extractor.prompt.name!r}.")
        if extractor.prompt.needs_class_list and not class_names:
            raise ValueError(f"Prompt {extractor.prompt.name!r} lists the class names: pass class_names.")
        self.class_names = check_class_names(class_names) if class_names is not None else None
        self.answer_column = answer_column
        super().__init__(extractor, image_column)

    def __call__(self, batch: dict) -> dict:
        self._check(batch, [self.image_column, self.answer_column])
        answers = batch[self.answer_column] if self.answer_column else None
        missing = [i for i, answer in enumerate(answers or ()) if not isinstance(answer, str)]
        if missing:
            raise ValueError(
                f"Rows {missing[:10]} of the batch have no answer in {self.answer_column!r} (got "
                f"{type(answers[missing[0]]).__name__}): every row needs the teacher's answer text."
            )
        return self._columns(self.extractor(batch[self.image_column], class_names=self.class_names, answers=answers))


class DetectionInteractionMapFn(_TeacherMapFn):
    """Batched map function of a detection teacher (Eq. 12) over COCO-style rows: `objects_column` holds
    `bbox` (x, y, w, h) and `category` (ids, named through `category_names`, or names)."""

    def __init__(
        self,
        extractor: InteractionExtractor,
        category_names: Sequence[str] | None = None,
        image_column: str = "image",
        objects_column: str = "objects",
    ):
        if extractor.prompt.task != "detection":
            raise ValueError(f"DetectionInteractionMapFn needs a detection prompt, got {extractor.prompt.name!r}.")
        self.category_names = list(category_names) if category_names else None
        self.objects_column = objects_column
        super().__init__(extractor, image_column)

    def _name(self, category) -> str:
        if isinstance(category, str):
            return category
        if self.category_names is None or not 0 <= int(category) < len(self.category_names):
            raise ValueError(f"Unknown category id {category!r}: pass category_names covering every id.")
        return self.category_names[int(category)]

    def __call__(self, batch: dict) -> dict:
        self._check(batch, [self.image_column, self.objects_column])
        for i, objects in enumerate(batch[self.objects_column]):
            if not isinstance(objects, dict) or not {"bbox", "category"} <= set(objects):
                found = sorted(objects) if isinstance(objects, dict) else type(objects).__name__
                raise ValueError(
                    f"Row {i} of the batch: the objects column {self.objects_column!r} must hold COCO-style objects "
                    f"{{'bbox': [[x, y, w, h], ...], 'category': [...]}}, got {found}."
                )
        boxes = [list(objects["bbox"]) for objects in batch[self.objects_column]]
        categories = [[self._name(c) for c in objects["category"]] for objects in batch[self.objects_column]]
        return self._columns(self.extractor.detect(batch[self.image_column], boxes, categories))


def interaction_map_fn(extractor: InteractionExtractor, **kwargs) -> _TeacherMapFn:
    """The map function matching the extractor's prompt: `InteractionMapFn` (classification, `class_names=`) or
    `DetectionInteractionMapFn` (detection, `category_names=`, `objects_column=`)."""
    classification = extractor.prompt.task == "classification"
    other = "category_names" if classification else "class_names"
    if other in kwargs:
        raise ValueError(
            f"{other} is for {'detection' if classification else 'classification'} prompts; {extractor.prompt.name!r} "
            f"is a {extractor.prompt.task} prompt (pass {'class_names' if classification else 'category_names'})."
        )
    return (InteractionMapFn if classification else DetectionInteractionMapFn)(extractor, **kwargs)


class _CountingMapFn:
    """`map_fn` that advances a progress bar by the rows of every batch it maps (rows/s and ETA per process)."""

    def __init__(self, map_fn, progress):
        self.map_fn, self.progress = map_fn, progress

    def __call__(self, batch: dict) -> dict:
        output = self.map_fn(batch)
        self.progress.update(len(next(iter(batch.values()))))
        return output


def process_state() -> PartialState:
    """This process's place among those `accelerate launch` (or torchrun) started; on a machine without an
    accelerator, torchrun's processes join over gloo (`cpu=True`; accelerate's own `--cpu` launcher needs MPI)."""
    return PartialState(cpu=torch.accelerator.current_accelerator() is None)


@contextmanager
def _datasets_progress_bars_off():
    """Our bar counts rows across shards; the per-shard bars of `Dataset.map` would only add noise."""
    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            enable_progress_bars()


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    partial.write_text(text)
    partial.replace(path)


def precompute_manifest(dataset: Dataset, map_fn, shard_size: int) -> dict:
    """What a precompute folder is for: the rows, their sharding, the dataset's and the map function's fingerprints
    and the map function's provenance (the teacher's weights' SHA-256 among it)."""
    return {
        "num_rows": len(dataset),
        "shard_size": shard_size,
        "dataset_fingerprint": dataset._fingerprint,
        "map_fn_fingerprint": Hasher.hash(map_fn),
        "map_fn": map_fn.provenance() if hasattr(map_fn, "provenance") else None,
    }


def check_manifest(output_dir: str | os.PathLike, manifest: dict) -> None:
    """A `ValueError` naming what differs when `output_dir` holds a precompute of other settings."""
    output_dir = Path(output_dir)
    recorded = json.loads((output_dir / "precompute.json").read_text())
    if recorded != manifest:
        changed = sorted(k for k in manifest if recorded.get(k) != manifest[k] and k != "map_fn")
        ours, theirs = manifest["map_fn"] or {}, recorded.get("map_fn") or {}
        changed += sorted(f"map_fn.{k}" for k in ours if theirs.get(k) != ours[k])
        raise ValueError(
            f"{output_dir} holds a precompute with other settings ({changed} differ); use another folder."
        )


def precompute_interactions(
    dataset: Dataset, map_fn, output_dir: str | os.PathLike, shard_size: int = 256, batch_size: int = 16
) -> Dataset:
    """`dataset.map(map_fn, batched=True)` in shards of `shard_size` rows, each saved to `output_dir/shards` once
    done (written to a temporary folder, then renamed): a run started again with the same arguments, after an
    interruption or a crash, skips every finished shard.

    Under `accelerate launch` (any `PartialState` with several processes) process k maps shards k, k + n, ...
    with its own progress bar (rows/s, ETA); all processes wait for each other, then each returns the whole
    result. Returns the mapped dataset (the shards, concatenated, memory-mapped). `output_dir/precompute.json`
    records the dataset's and the map function's fingerprints and provenance (the teacher's weights' SHA-256):
    other settings in the same folder are refused.
    """
    for name, value in (("shard_size", shard_size), ("batch_size", batch_size)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}.")
    if len(dataset) == 0:
        raise ValueError("The dataset to precompute interaction maps for has no rows.")
    state = process_state()
    output_dir = Path(output_dir)
    manifest = precompute_manifest(dataset, map_fn, shard_size)
    if state.is_main_process and not (output_dir / "precompute.json").exists():
        output_dir.mkdir(parents=True, exist_ok=True)
        _write_atomically(output_dir / "precompute.json", json.dumps(manifest, indent=2))
    state.wait_for_everyone()
    check_manifest(output_dir, manifest)  # every process: all of them stop on other settings, none waits forever

    shards_dir = output_dir / "shards"
    num_shards = max(1, -(-len(dataset) // shard_size))
    paths = [shards_dir / f"{i:05d}-of-{num_shards:05d}" for i in range(num_shards)]
    mine = [i for i in range(state.process_index, num_shards, state.num_processes) if not paths[i].exists()]
    rows_of = {i: range(i * shard_size, min((i + 1) * shard_size, len(dataset))) for i in mine}
    features = map_fn.output_features(dataset.features) if hasattr(map_fn, "output_features") else None
    label = f"interaction maps, process {state.process_index + 1}/{state.num_processes}"
    with tqdm(
        total=sum(map(len, rows_of.values())), desc=label, unit="rows", position=state.process_index
    ) as progress:
        finished = sum(path.exists() for path in paths)
        progress.write(f"{label}: {len(mine)} shards to map ({finished} of {num_shards} finished before, skipped)")
        counting = _CountingMapFn(map_fn, progress)
        for i in mine:
            with _datasets_progress_bars_off():
                shard = dataset.select(rows_of[i]).map(
                    counting,
                    batched=True,
                    batch_size=batch_size,
                    features=features,
                    keep_in_memory=True,
                    load_from_cache_file=False,
                    new_fingerprint=f"{manifest['map_fn_fingerprint']}-{i}",
                )
            for stale in shards_dir.glob(f"{paths[i].name}.*.partial"):  # left by a killed run: only k writes shard i
                shutil.rmtree(stale, ignore_errors=True)
            partial = paths[i].with_name(f"{paths[i].name}.{os.getpid()}.partial")
            with _datasets_progress_bars_off():
                shard.save_to_disk(str(partial))
            partial.rename(paths[i])  # a shard exists only once it is complete
    state.wait_for_everyone()
    missing = [path.name for path in paths if not path.exists()]
    if missing:
        raise RuntimeError(f"Shards {missing} of {output_dir} are missing after every process finished.")
    return concatenate_datasets([load_from_disk(str(path)) for path in paths])


__all__ = [
    "STATUS_EMPTY_MASK",
    "STATUS_OK",
    "DetectionInteractionMapFn",
    "InteractionMapFn",
    "MaskInteractionMapFn",
    "interaction_map_fn",
    "precompute_interactions",
    "process_state",
]
