"""`datasets` map functions that add teacher interaction maps to an image dataset (architecture.md decision 4),
and a resumable precompute for large splits.

The result has three columns the `InteractionTrainer` reads: `interaction_map` (float16, teacher grid of any
(rows, cols)), `interaction_valid` (bool: False rows get no alignment loss) and `interaction_status` (why a row is
invalid); the VLM map functions add provenance columns (`interaction_prompt`, `interaction_answer`,
`interaction_foreground`, `interaction_background`). Every map function declares the `features` of its columns:
pass `features=map_fn.output_features(ds.features)` to `Dataset.map` (`precompute_interactions` does), otherwise
`datasets` infers the types from the first batch and a first batch without any parsed word fails a later one.
The map functions are picklable classes, so `Dataset.map` fingerprints and caches them; a VLM map function pickles
as the identity of its teacher (name and `weights_fingerprint`) and settings, not its weights (run it with
`num_proc=1`: the model stays in the process).
"""

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from datasets import Dataset, Features, List, Value, concatenate_datasets, load_from_disk
from datasets.fingerprint import Hasher
from tqdm.auto import tqdm

from ..columns import require_columns
from .fingerprint import weights_fingerprint
from .maps import mask_to_interaction_map
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


class _DeclaredFeatures:
    """The `features` of the columns a map function adds, and of the whole mapped dataset."""

    features: Features = MAP_FEATURES

    def output_features(self, input_features: Features) -> Features:
        """`features=` for `Dataset.map(self, ...)`: the input columns' features, then the interaction columns'."""
        return Features({**{k: v for k, v in input_features.items() if k not in self.features}, **self.features})


class MaskInteractionMapFn(_DeclaredFeatures):
    """Batched map function of a *mask teacher*: `ds.map(MaskInteractionMapFn(grid=(24, 24)), batched=True)`.

    Every row's segmentation mask becomes its teacher map (`mask_to_interaction_map`); a mask without foreground
    gives an all-zero map with `interaction_valid=False` and status `"empty_mask"`.
    """

    def __init__(
        self, mask_column: str = "mask", grid: tuple[int, int] = (24, 24), blur_sigma: float = 0.0, leak: float = 0.0
    ):
        self.mask_column = mask_column
        self.grid = tuple(grid)
        self.blur_sigma = blur_sigma
        self.leak = leak

    def provenance(self) -> dict:
        """What produced the maps, for the dataset card."""
        return {
            "teacher": f"mask teacher (column {self.mask_column!r})",
            "grid": f"{self.grid[0]} x {self.grid[1]}",
            "blur_sigma": self.blur_sigma,
            "leak": self.leak,
            "dtype": "float16",
        }

    def __call__(self, batch: dict) -> dict:
        if self.mask_column not in batch:
            raise ValueError(f"The dataset has no mask column {self.mask_column!r} (columns: {sorted(batch)}).")
        maps = [mask_to_interaction_map(m, self.grid, self.blur_sigma, self.leak) for m in batch[self.mask_column]]
        valid = [bool(m.sum() > 0) for m in maps]
        return {
            "interaction_map": [m.numpy().astype(np.float16) for m in maps],
            "interaction_valid": valid,
            "interaction_status": [STATUS_OK if v else STATUS_EMPTY_MASK for v in valid],
            "interaction_teacher": [json.dumps(self.provenance())] * len(maps),
        }


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
            raise RuntimeError("This map function was unpickled without its teacher model: run Dataset.map with num_proc=1.")
        require_columns(batch, *columns)

    def _columns(self, results: list[TeacherInteraction]) -> dict:
        return {
            "interaction_map": [r.interaction_map for r in results],
            "interaction_valid": [r.valid for r in results],
            "interaction_status": [r.status for r in results],
            "interaction_prompt": [self.extractor.prompt.name] * len(results),
            "interaction_answer": [r.answer for r in results],
            "interaction_foreground": [r.foreground for r in results],
            "interaction_background": [r.background for r in results],
            "interaction_teacher": [json.dumps(self.provenance())] * len(results),
        }


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
        boxes = [list(objects["bbox"]) for objects in batch[self.objects_column]]
        categories = [[self._name(c) for c in objects["category"]] for objects in batch[self.objects_column]]
        return self._columns(self.extractor.detect(batch[self.image_column], boxes, categories))


def interaction_map_fn(extractor: InteractionExtractor, **kwargs) -> _TeacherMapFn:
    """The map function matching the extractor's prompt: `InteractionMapFn` (classification, `class_names=`) or
    `DetectionInteractionMapFn` (detection, `category_names=`, `objects_column=`)."""
    map_fn = InteractionMapFn if extractor.prompt.task == "classification" else DetectionInteractionMapFn
    return map_fn(extractor, **kwargs)


def precompute_interactions(
    dataset: Dataset, map_fn, output_dir: str | os.PathLike, shard_size: int = 256, batch_size: int = 16
) -> Dataset:
    """`dataset.map(map_fn, batched=True)` in shards of `shard_size` rows, each saved to `output_dir/shards` once
    done: an interrupted run, started again with the same arguments, skips every finished shard.

    Returns the mapped dataset (the finished shards, concatenated). `output_dir/precompute.json` records the
    dataset's and the map function's fingerprints; other settings in the same folder are refused.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}.")
    if len(dataset) == 0:
        raise ValueError("The dataset to precompute interaction maps for has no rows.")
    output_dir = Path(output_dir)
    manifest = {
        "num_rows": len(dataset),
        "shard_size": shard_size,
        "dataset_fingerprint": dataset._fingerprint,
        "map_fn_fingerprint": Hasher.hash(map_fn),
        "map_fn": map_fn.provenance() if hasattr(map_fn, "provenance") else None,
    }
    manifest_path = output_dir / "precompute.json"
    if manifest_path.exists():
        recorded = json.loads(manifest_path.read_text())
        if recorded != manifest:
            changed = sorted(k for k in manifest if recorded.get(k) != manifest[k] and k != "map_fn")
            changed += sorted(f"map_fn.{k}" for k in (manifest["map_fn"] or {}) if (recorded.get("map_fn") or {}).get(k) != manifest["map_fn"][k])
            raise ValueError(f"{output_dir} holds a precompute with other settings ({changed} differ); use another folder.")
    else:
        output_dir.mkdir(parents=True, exist_ok=True)
        manifest_path.write_text(json.dumps(manifest, indent=2))
    shards_dir = output_dir / "shards"
    num_shards = max(1, -(-len(dataset) // shard_size))
    paths = [shards_dir / f"{i:05d}-of-{num_shards:05d}" for i in range(num_shards)]
    done = sum(path.exists() for path in paths)
    for i, path in enumerate(tqdm(paths, desc="interaction maps (shards)", initial=done, total=num_shards)):
        if path.exists():
            continue
        rows = range(i * shard_size, min((i + 1) * shard_size, len(dataset)))
        features = map_fn.output_features(dataset.features) if hasattr(map_fn, "output_features") else None
        shard = dataset.select(rows).map(
            map_fn, batched=True, batch_size=batch_size, features=features, keep_in_memory=True, load_from_cache_file=False
        )
        partial = path.with_name(path.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shard.save_to_disk(str(partial))
        partial.rename(path)  # a shard exists only once it is complete
    return concatenate_datasets([load_from_disk(str(path)) for path in paths])


__all__ = [
    "STATUS_EMPTY_MASK",
    "STATUS_OK",
    "DetectionInteractionMapFn",
    "InteractionMapFn",
    "MaskInteractionMapFn",
    "interaction_map_fn",
    "precompute_interactions",
]
