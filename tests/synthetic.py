"""A small real-image dataset made on the fly: a coloured square (the class) on a noise background, with its
segmentation mask, in the column layout of ../shared/data/emoji-shift (image, mask, label)."""

from pathlib import Path

import numpy as np
from datasets import ClassLabel, Dataset, Features, Image

CLASS_NAMES = ["red", "green", "blue"]
COLOURS = np.array([[230, 30, 30], [30, 230, 30], [30, 30, 230]], dtype=np.uint8)


def make_image_dataset(n: int = 24, size: int = 32, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    images, masks, labels = [], [], []
    for i in range(n):
        label = i % len(CLASS_NAMES)
        image = rng.integers(0, 120, (size, size, 3), dtype=np.uint8)
        mask = np.zeros((size, size), dtype=np.uint8)
        side = int(rng.integers(size // 4, size // 2))
        top, left = rng.integers(0, size - side, 2)
        image[top : top + side, left : left + side] = COLOURS[label]
        mask[top : top + side, left : left + side] = 255
        images.append(image)
        masks.append(mask)
        labels.append(label)
    features = Features({"image": Image(), "mask": Image(), "label": ClassLabel(names=CLASS_NAMES)})
    return Dataset.from_dict({"image": images, "mask": masks, "label": labels}, features=features)


def write_parquet_splits(folder: Path, sizes: dict[str, int] | None = None) -> Path:
    """One parquet file per split (train.parquet, validation.parquet), as emoji-shift ships."""
    folder.mkdir(parents=True, exist_ok=True)
    for seed, (split, n) in enumerate((sizes or {"train": 24, "validation": 12}).items()):
        make_image_dataset(n, seed=seed).to_parquet(str(folder / f"{split}.parquet"))
    return folder
