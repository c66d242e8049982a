"""Loading image datasets (Hub id or local path) for training and precompute, and checking them before any training
step."""

import json
import logging
from pathlib import Path

import numpy as np
from datasets import Dataset, DatasetDict, Features, load_dataset, load_from_disk

from ..demo import is_shipped, shipped_dataset_path
from ..modeling.name_or_path import resolve_name_or_path

logger = logging.getLogger(__name__)

# below this share of rows with a usable teacher map (valid, with mass) the run warns: it is mostly a baseline
MIN_VALID_MAP_SHARE = 0.5


def load_saved_dataset(path: str | Path) -> Dataset | DatasetDict:
    """`load_from_disk`, except that a saved dataset (or split) without rows, which `datasets` cannot load back (it
    has no data file: an `IndexError`), loads as an empty dataset of its features, for the checks to name."""
    path = Path(path)
    if (path / "dataset_dict.json").exists():
        splits = json.loads((path / "dataset_dict.json").read_text())["splits"]
        return DatasetDict({split: load_saved_dataset(path / split) for split in splits})
    if json.loads((path / "state.json").read_text()).get("_data_files"):
        return load_from_disk(str(path))
    info = json.loads((path / "dataset_info.json").read_text())
    features = Features.from_dict(info["features"])
    return Dataset.from_dict({name: [] for name in features}, features=features)


def load_image_dataset(name_or_path: str, config_name: str | None = None, revision: str | None = None) -> DatasetDict:
    """Every split of a dataset, by Hub id or local path (`resolve_name_or_path`), split names kept as they are.

    - a Hub id: `load_dataset(name_or_path, config_name, revision=revision)`, the splits and configs its card lists;
    - a folder written by `save_to_disk`: `load_saved_dataset` (a single `Dataset` becomes the split "train");
    - a folder of parquet files, one split per file name (`train.parquet`, `test_iid.parquet`,
      `validation-00000-of-00002.parquet`, ...), or one such file: that split name, even where `datasets`' own
      split patterns would merge `test_iid` and `test_shifted` into "test";
    - any other folder: `load_dataset(folder)`, e.g. an image folder with one sub-folder per class, or a folder with a
      README that lists its configs and data files;
    - `hf_lfi:NAME`: a data set shipped with the package (`hf_lfi.demo`), neither a Hub id nor a path.
    """
    if is_shipped(name_or_path):
        name_or_path = shipped_dataset_path(name_or_path)
    source = resolve_name_or_path(name_or_path, "dataset", revision)
    path = Path(source)
    if not path.exists():  # a Hub id
        return load_dataset(source, config_name, revision=revision)
    if config_name is not None or revision is not None:
        raise ValueError(f"A configuration name or revision applies to Hub datasets, not to the local path {source}.")
    if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
        loaded = load_saved_dataset(path)
        return loaded if isinstance(loaded, DatasetDict) else DatasetDict({"train": loaded})
    parquet_files = [path] if path.is_file() else sorted(path.glob("*.parquet"))
    if parquet_files:
        splits: dict[str, list[str]] = {}
        for file in parquet_files:
            splits.setdefault(file.stem.split("-")[0], []).append(str(file))
        return load_dataset("parquet", data_files=splits)
    return load_dataset(str(path))


def subsample(dataset: Dataset, ratio: float, seed: int) -> Dataset:
    """A seeded random `ratio` share of the rows (paper Table 2's data ratios), at least one row."""
    if not 0 < ratio <= 1:
        raise ValueError(f"data_ratio must be in (0, 1], got {ratio}.")
    if ratio == 1:
        return dataset
    keep = max(1, round(ratio * len(dataset)))
    return dataset.shuffle(seed=seed).select(range(keep))


def label_ids(dataset: Dataset, label_column: str) -> np.ndarray:
    """The class ids of `label_column`; raises if the column is missing or holds anything but integers."""
    if label_column not in dataset.column_names:
        raise ValueError(f"The dataset has no label column {label_column!r} (columns: {dataset.column_names}).")
    labels = np.asarray(dataset.select_columns([label_column]).with_format("numpy")[:][label_column])
    if labels.dtype.kind not in "iu":
        kind = {"f": "floats", "U": "strings", "S": "strings", "O": "objects", "b": "booleans"}.get(
            labels.dtype.kind, str(labels.dtype)
        )
        example = labels.flat[0].item() if labels.size else None
        raise ValueError(
            f"The label column {label_column!r} holds {kind} (e.g. {example!r}); class ids "
            "must be integers: cast it, or turn names into ids with dataset.class_encode_column."
        )
    return labels


def check_labels(dataset: Dataset, label_column: str, num_labels: int) -> None:
    """Raise before training if the label column is missing, not integer or holds ids outside [0, num_labels)."""
    labels = label_ids(dataset, label_column)
    bad = labels[(labels < 0) | (labels >= num_labels)]
    if bad.size:
        raise ValueError(
            f"Labels out of range: {sorted(set(bad.tolist()))[:10]} for a model with num_labels={num_labels}."
        )


def check_interaction_column(
    dataset: Dataset, map_column: str, valid_column: str, batch_size: int = 1024
) -> tuple[int, int]:
    """Raise before training if the teacher maps are missing or malformed; return their grid (rows, cols).

    Every map must be a 2-d grid of the same shape, finite and non-negative; a row marked valid must have mass.
    No usable map at all (every one empty or marked invalid) is an error: the run would be a plain baseline with a
    zero alignment loss. Fewer than `MIN_VALID_MAP_SHARE` usable maps give a warning.
    """
    if map_column not in dataset.column_names:
        raise ValueError(
            f"The training dataset has no interaction map column {map_column!r} (columns: {dataset.column_names}). "
            "Precompute teacher maps (hf_lfi.interactions), use teacher='mask' with a mask column, or train with "
            "alignment_weight=0."
        )
    if len(dataset) == 0:
        raise ValueError("The training dataset is empty.")
    columns = [map_column] + ([valid_column] if valid_column in dataset.column_names else [])
    grid, usable = None, 0
    view = dataset.select_columns(columns).with_format("numpy")
    for start in range(0, len(dataset), batch_size):
        batch = view[start : start + batch_size]
        missing = [start + i for i, m in enumerate(batch[map_column]) if m is None]
        if missing:
            raise ValueError(
                f"Rows {missing[:10]} have no interaction map ({map_column!r} is None): precompute their maps, or "
                "drop those rows."
            )
        arrays = [np.asarray(m, dtype=np.float32) for m in batch[map_column]]
        grid = arrays[0].shape if grid is None else grid
        odd = next((start + i for i, m in enumerate(arrays) if m.shape != grid), None)
        if odd is not None:
            raise ValueError(
                f"Interaction maps differ in shape: row {odd} has shape {arrays[odd - start].shape}, the rows before "
                f"it {grid}. Every teacher map of a dataset must be on the same grid."
            )
        maps = np.stack(arrays)
        if maps.ndim != 3:
            raise ValueError(f"Interaction maps must be 2-d (height, width); row {start} has shape {maps.shape[1:]}.")
        problems = {
            "NaN or infinite values": ~np.isfinite(maps).all(axis=(1, 2)),
            "negative values": (maps < 0).any(axis=(1, 2)),
        }
        for problem, rows in problems.items():
            if rows.any():
                raise ValueError(f"Interaction map of row {start + int(np.argmax(rows))} has {problem}.")
        has_mass = maps.sum(axis=(1, 2)) > 0
        if valid_column in batch:
            marked = np.asarray(batch[valid_column], dtype=bool)
            empty = marked & ~has_mass
            if empty.any():
                raise ValueError(
                    f"Row {start + int(np.argmax(empty))} is marked {valid_column}=True but its map is all zero."
                )
            has_mass &= marked
        usable += int(has_mass.sum())
    if usable == 0:
        raise ValueError(
            f"None of the {len(dataset)} teacher maps in {map_column!r} is usable (all empty or marked invalid in "
            f"{valid_column!r}): the alignment loss would be 0. Fix the teacher, or set alignment_weight=0 for a baseline."
        )
    if usable < MIN_VALID_MAP_SHARE * len(dataset):
        logger.warning(
            "Only %d of %d training rows (%.0f %%) have a usable teacher map; the others train without alignment.",
            usable,
            len(dataset),
            100 * usable / len(dataset),
        )
    return tuple(int(size) for size in grid)


__all__ = [
    "MIN_VALID_MAP_SHARE",
    "check_interaction_column",
    "check_labels",
    "label_ids",
    "load_image_dataset",
    "load_saved_dataset",
    "subsample",
]
