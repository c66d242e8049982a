import numpy as np
import pytest
import torch
from synthetic import make_image_dataset
from transformers import ViTImageProcessor

from hf_lfi.interactions import crop_interaction_map, mask_to_grid, mask_to_interaction_map
from hf_lfi.training import ROW_INDEX_COLUMN, ImageClassificationTransform, random_resized_crop_box


def test_crop_of_the_whole_image_keeps_the_map():
    teacher = torch.rand(6, 6)
    teacher /= teacher.sum()
    torch.testing.assert_close(crop_interaction_map(teacher, (0, 0, 60, 48), (60, 48)), teacher)


def test_crop_moves_the_mass_with_the_pixels():
    teacher = torch.zeros(4, 4)
    teacher[0, 3] = 1.0  # top-right cell of a 40 x 40 image: pixels x 30..40, y 0..10
    right_half = crop_interaction_map(teacher, (20, 0, 40, 40), (40, 40))
    expected = torch.zeros(4, 4)
    expected[0:1, 2:4] = 0.5  # the cell now spans a 2 x 1 block of the cropped grid (pooled from 4 x 4 to 4 x 4)
    torch.testing.assert_close(right_half, expected)
    assert crop_interaction_map(teacher, (0, 0, 20, 40), (40, 40)).sum() == 0  # the crop holds no teacher mass


def test_random_resized_crop_box_stays_inside_the_image():
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        left, top, right, bottom = random_resized_crop_box(50, 30, (0.08, 1.0), (3 / 4, 4 / 3), generator)
        assert 0 <= left < right <= 50 and 0 <= top < bottom <= 30


def test_augmented_maps_follow_the_augmented_pixels():
    """Crop and flip move the teacher map exactly as they move the coloured square it marks."""
    dataset = make_image_dataset(12, size=64)
    processor = ViTImageProcessor(size={"height": 64, "width": 64}, image_mean=[0, 0, 0], image_std=[1, 1, 1])
    maps = [mask_to_interaction_map(mask, (16, 16)).numpy() for mask in dataset["mask"]]
    dataset = dataset.add_column("interaction_map", [m.tolist() for m in maps]).add_column(
        ROW_INDEX_COLUMN, list(range(12))
    )
    transform = ImageClassificationTransform(processor, map_column="interaction_map", augment=True, scale=(0.3, 1.0))
    out = transform(dataset[:12])
    assert out["pixel_values"].shape == (12, 3, 64, 64) and out["labels"] == dataset["label"]
    agreements = []
    for pixels, teacher in zip(out["pixel_values"], out["interaction_map"]):
        square = (pixels.max(dim=0).values > 200 / 255).numpy()  # the saturated colour of the class square
        if teacher.sum() == 0 or not square.any():
            continue  # the crop missed the square
        coverage = mask_to_grid(square, (16, 16)).flatten()
        agreements.append(float(teacher.flatten() @ coverage / (teacher.norm() * coverage.norm())))
    assert len(agreements) >= 8 and min(agreements) > 0.9


def test_augmentation_depends_on_seed_epoch_and_row_only():
    dataset = make_image_dataset(4).add_column(ROW_INDEX_COLUMN, [0, 1, 2, 3])
    transform = ImageClassificationTransform(ViTImageProcessor(size={"height": 32, "width": 32}), augment=True)
    first = transform(dataset[:4])["pixel_values"]
    torch.manual_seed(123)  # the global RNG plays no part
    torch.testing.assert_close(transform(dataset[:4])["pixel_values"], first)
    torch.testing.assert_close(transform(dataset[2:4])["pixel_values"], first[2:])  # batching plays no part
    transform.epoch = 1
    assert not torch.allclose(transform(dataset[:4])["pixel_values"], first)


def test_transform_names_a_missing_column():
    transform = ImageClassificationTransform(ViTImageProcessor(), map_column="interaction_map")
    with pytest.raises(ValueError, match="no column 'interaction_map'"):
        transform(make_image_dataset(2)[:2])
    augmenting = ImageClassificationTransform(ViTImageProcessor(), augment=True)
    with pytest.raises(ValueError, match="no column 'row_index'"):
        augmenting(make_image_dataset(2)[:2])


def test_transform_refuses_rows_without_maps_and_empty_crop_ranges():
    rows = make_image_dataset(2)[:2]
    rows["interaction_map"] = [np.full((4, 4), 1 / 16).tolist(), None]
    transform = ImageClassificationTransform(ViTImageProcessor(), map_column="interaction_map")
    with pytest.raises(ValueError, match="Row 1 of the batch has no 2-d teacher map in 'interaction_map'"):
        transform(rows)
    with pytest.raises(
        ValueError, match="scale must be \\(low, high\\) area shares"
    ):  # was: the whole image, silently
        ImageClassificationTransform(ViTImageProcessor(), augment=True, scale=(2.0, 3.0))
    with pytest.raises(ValueError, match="ratio must be \\(low, high\\) aspect ratios"):
        ImageClassificationTransform(ViTImageProcessor(), augment=True, ratio=(0.0, 1.0))
