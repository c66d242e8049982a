"""Image transforms for training: the model's image processor, train-time augmentation applied to the image and
its teacher map alike, so the map keeps pointing at the same pixels.

Augmentation draws from a generator seeded by (seed, epoch, row index), not from the global RNG: a run resumed from
a checkpoint, or split over several processes, sees exactly the crops of an uninterrupted single-process run.
"""

import math

import numpy as np
import torch
from PIL import ImageOps
from transformers import TrainerCallback, default_data_collator

from ..columns import require_columns
from ..interactions.maps import crop_interaction_map

# the column `ImageClassificationTransform` reads each row's index from when augmenting
ROW_INDEX_COLUMN = "row_index"
# the batch key of the (augmented) PIL images an online teacher looks at
TEACHER_IMAGES = "teacher_images"


def random_resized_crop_box(
    width: int,
    height: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator | None = None,
) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of a random crop of `scale` area share and `ratio` aspect (as torchvision's
    RandomResizedCrop, ten tries, then the whole image)."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
        aspect = math.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=generator).item())
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            return left, top, left + w, top + h
    return 0, 0, width, height


class ImageClassificationTransform:
    """`dataset.set_transform` callable: images -> `pixel_values` with the model's image processor, labels ->
    `labels`, and, when `map_column` is given, the teacher maps (+ validity) as float32 tensors.

    With `augment=True` each image gets a random resized crop and a horizontal flip (torchvision defaults), and its
    teacher map the same crop and flip, drawn from a generator seeded by (`seed`, `epoch`, the row's
    `ROW_INDEX_COLUMN`); `AugmentationEpochCallback` advances `epoch` with the Trainer's. `keep_teacher_images`
    adds the augmented PIL images under `TEACHER_IMAGES` for an online teacher (collate with
    `collate_with_teacher_images`), which then sees exactly the student's view.
    """

    def __init__(
        self,
        image_processor,
        image_column: str = "image",
        label_column: str = "label",
        map_column: str | None = None,
        valid_column: str | None = None,
        augment: bool = False,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        seed: int = 0,
        keep_teacher_images: bool = False,
    ):
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"scale must be (low, high) area shares with 0 < low <= high <= 1, got {scale}.")
        if not 0 < ratio[0] <= ratio[1] < math.inf:
            raise ValueError(f"ratio must be (low, high) aspect ratios with 0 < low <= high, got {ratio}.")
        self.image_processor = image_processor
        self.image_column = image_column
        self.label_column = label_column
        self.map_column = map_column
        self.valid_column = valid_column
        self.augment = augment
        self.scale = scale
        self.ratio = ratio
        self.seed = seed
        self.epoch = 0
        self.keep_teacher_images = keep_teacher_images

    def __call__(self, batch: dict) -> dict:
        require_columns(
            batch, self.image_column, self.label_column, self.map_column, ROW_INDEX_COLUMN if self.augment else None
        )
        images = [image.convert("RGB") for image in batch[self.image_column]]
        maps = None
        if self.map_column is not None:
            maps = [torch.as_tensor(np.asarray(m, dtype=np.float32)) for m in batch[self.map_column]]
            flat = [i for i, m in enumerate(maps) if m.ndim != 2]
            if flat:
                raise ValueError(
                    f"Row {flat[0]} of the batch has no 2-d teacher map in {self.map_column!r} (got shape "
                    f"{tuple(maps[flat[0]].shape)}); drop rows without maps or precompute them."
                )
        if self.augment:
            for i, (image, row) in enumerate(zip(images, batch[ROW_INDEX_COLUMN])):
                generator = torch.Generator().manual_seed(hash((self.seed, self.epoch, int(row))) % 2**63)
                box = random_resized_crop_box(*image.size, self.scale, self.ratio, generator)
                flip = bool(torch.rand(1, generator=generator) < 0.5)
                if maps is not None:
                    maps[i] = crop_interaction_map(maps[i], box, image.size)
                    maps[i] = maps[i].flip(-1) if flip else maps[i]
                images[i] = ImageOps.mirror(image.crop(box)) if flip else image.crop(box)
        out = {
            "pixel_values": self.image_processor(images, return_tensors="pt")["pixel_values"],
            "labels": list(batch[self.label_column]),
        }
        if maps is not None:
            out[self.map_column] = maps
            if self.valid_column is not None and self.valid_column in batch:
                out[self.valid_column] = [bool(v) for v in batch[self.valid_column]]
        if self.keep_teacher_images:
            out[TEACHER_IMAGES] = images
        return out


def collate_with_teacher_images(examples: list[dict]) -> dict:
    """`default_data_collator`, with the PIL images under `TEACHER_IMAGES` passed through as a list."""
    images = [example[TEACHER_IMAGES] for example in examples] if TEACHER_IMAGES in examples[0] else None
    batch = default_data_collator([{k: v for k, v in example.items() if k != TEACHER_IMAGES} for example in examples])
    if images is not None:
        batch[TEACHER_IMAGES] = images
    return batch


class AugmentationEpochCallback(TrainerCallback):
    """Sets the training transform's `epoch` at the start of every epoch (also of a resumed one)."""

    def __init__(self, transform: ImageClassificationTransform):
        self.transform = transform

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.transform.epoch = math.floor(state.epoch + 1e-6)


__all__ = [
    "ROW_INDEX_COLUMN",
    "TEACHER_IMAGES",
    "collate_with_teacher_images",
    "AugmentationEpochCallback",
    "ImageClassificationTransform",
    "random_resized_crop_box",
]
