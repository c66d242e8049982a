"""The rows a run trains and evaluates on: the splits of `--dataset_name` / `--interaction_dataset`, capped and
subsampled, made detection rows where the task needs them, and their class names."""

from ..training import label_ids, load_image_dataset, subsample
from ..training.detection import few_shot_subset, single_object_detection
from .arguments import DataArguments


def load_data(data_args: DataArguments, training_args) -> tuple:
    """(training split, {evaluated split name: rows}) with `--max_train_samples`, `--data_ratio` and
    `--max_eval_samples` applied; the training rows come from the interaction dataset when one is given."""
    raw = load_image_dataset(data_args.dataset_name, data_args.dataset_config_name) if data_args.dataset_name else {}
    source = data_args.interaction_dataset or data_args.dataset_name
    if source is None:
        raise ValueError("No data: give --dataset_name (a Hub id or folder) or --interaction_dataset.")
    splits = load_image_dataset(data_args.interaction_dataset) if data_args.interaction_dataset else raw
    if data_args.train_split not in splits:
        raise ValueError(f"No split {data_args.train_split!r} in {source} (splits: {list(splits)}).")
    train = splits[data_args.train_split]
    if len(train) == 0:
        raise ValueError(f"The training split {data_args.train_split!r} of {source} has no rows.")
    if data_args.max_train_samples is not None:  # a cap on the split; data_ratio then takes its share of it
        train = train.select(range(min(data_args.max_train_samples, len(train))))
    train = subsample(train, data_args.data_ratio, training_args.data_seed or training_args.seed)
    evaluated = {}
    for split in filter(None, [data_args.eval_split, *data_args.test_splits]):
        if split not in raw:
            raise ValueError(f"No split {split!r} to evaluate in {data_args.dataset_name} (splits: {list(raw)}).")
        dataset = raw[split]
        if data_args.max_eval_samples is not None:
            dataset = dataset.select(range(min(data_args.max_eval_samples, len(dataset))))
        evaluated[split] = dataset
    return train, evaluated


def detection_rows(train, evaluated: dict, data_args: DataArguments, seed: int) -> tuple:
    """Detection rows: a single-object dataset's box and label as its objects (`--bbox_column`), then the seeded
    k-shot subset of the training rows (`--few_shot`)."""
    if data_args.bbox_column is not None:
        columns = (data_args.bbox_column, data_args.label_column, data_args.objects_column)
        train = single_object_detection(train, *columns)
        evaluated = {split: single_object_detection(rows, *columns) for split, rows in evaluated.items()}
    if data_args.few_shot is not None:
        train = few_shot_subset(train, data_args.few_shot, seed, data_args.objects_column)
    return train, evaluated


def label_names(dataset, label_column: str, objects_column: str | None = None) -> list[str]:
    """Class names from a ClassLabel feature (for detection: `objects_column`'s `category`), else "0".."max"."""
    if objects_column is not None:
        if objects_column not in dataset.column_names:
            boxes = [name for name in ("bbox", "box", "boxes") if name in dataset.column_names]
            hint = f" A single-object dataset with a box column: --bbox_column {boxes[0]}." if boxes else ""
            raise ValueError(
                f"The dataset has no objects column {objects_column!r} (columns: {dataset.column_names}).{hint}"
            )
        feature = dataset.features[objects_column]["category"]
        feature = getattr(feature, "feature", feature)  # a Sequence/List of ClassLabel
        if hasattr(feature, "names"):
            return list(feature.names)
        ids = [c for objects in dataset[objects_column] for c in objects["category"]]
        return [str(i) for i in range(int(max(ids, default=0)) + 1)]
    feature = dataset.features.get(label_column)
    if feature is None:
        raise ValueError(f"The dataset has no label column {label_column!r} (columns: {dataset.column_names}).")
    if hasattr(feature, "names"):
        return list(feature.names)
    return [str(i) for i in range(int(label_ids(dataset, label_column).max()) + 1)]


__all__ = ["detection_rows", "label_names", "load_data"]
