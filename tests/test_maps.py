import numpy as np
import pytest
import torch
from synthetic import make_image_dataset

from hf_lfi.interactions import MaskInteractionMapFn, mask_to_grid, mask_to_interaction_map


def test_mask_to_grid_is_the_covered_fraction_of_each_cell():
    mask = np.zeros((4, 4), dtype=np.uint8)
    mask[0, 0:3] = 255  # top-left cell half covered, top-right cell a quarter
    expected = torch.tensor([[0.5, 0.25], [0.0, 0.0]])
    torch.testing.assert_close(mask_to_grid(mask, (2, 2)), expected)
    rgb = np.repeat(mask[..., None], 3, axis=-1)
    torch.testing.assert_close(mask_to_grid(rgb, (2, 2)), expected)
    with pytest.raises(ValueError, match="must be \\(height, width\\)"):
        mask_to_grid(np.zeros((2, 2, 2, 2)), (2, 2))


def test_mask_teacher_map_normalisation_blur_and_leak():
    mask = np.zeros((16, 16), dtype=np.uint8)
    mask[4:8, 4:12] = 1
    sharp = mask_to_interaction_map(mask, (4, 4))
    assert sharp.sum().item() == pytest.approx(1.0)
    assert sharp[1, 1].item() == pytest.approx(0.5) and sharp[1, 2].item() == pytest.approx(0.5)

    blurred = mask_to_interaction_map(mask, (4, 4), blur_sigma=1.0)
    assert blurred.sum().item() == pytest.approx(1.0)
    assert blurred[1, 1] < sharp[1, 1] and blurred[0, 0] > 0

    leaky = mask_to_interaction_map(mask, (4, 4), leak=0.3)
    background = mask_to_grid(mask, (4, 4)) == 0
    assert leaky[background].sum().item() == pytest.approx(0.3)
    assert torch.allclose(leaky[background], leaky[background][0])  # spread uniformly
    assert leaky.sum().item() == pytest.approx(1.0)

    assert mask_to_interaction_map(np.zeros((8, 8)), (4, 4)).sum() == 0
    with pytest.raises(ValueError, match="leak must be in"):
        mask_to_interaction_map(mask, (4, 4), leak=1.5)
    with pytest.raises(ValueError, match="blur_sigma"):
        mask_to_interaction_map(mask, (4, 4), blur_sigma=-1)


def test_mask_map_function_adds_the_interaction_columns():
    dataset = make_image_dataset(4)
    masks = dataset["mask"]
    blank = dataset.map(
        lambda row, i: {"mask": np.zeros((32, 32), dtype=np.uint8) if i == 1 else row["mask"]}, with_indices=True
    )
    mapped = blank.map(MaskInteractionMapFn(grid=(8, 8)), batched=True, batch_size=3)
    assert mapped["interaction_status"] == ["ok", "empty_mask", "ok", "ok"]
    assert mapped["interaction_valid"] == [True, False, True, True]
    assert mapped.features["interaction_map"].feature.feature.dtype == "float16"  # stored as half floats
    maps = mapped.with_format("numpy")[:]["interaction_map"]
    assert maps.shape == (4, 8, 8)
    expected = mask_to_interaction_map(masks[0], (8, 8)).numpy()
    np.testing.assert_allclose(maps[0].astype(np.float32), expected, atol=1e-3)
    with pytest.raises(ValueError, match="no mask column 'segmentation'"):
        dataset.map(MaskInteractionMapFn(mask_column="segmentation"), batched=True)


def test_mask_teacher_pointing_at_another_rows_object():
    dataset = make_image_dataset(4)
    masks = dataset["mask"]
    half = dataset.map(MaskInteractionMapFn(grid=(8, 8), wrong_object=0.5), batched=True, batch_size=4)
    maps = half.with_format("numpy")[:]["interaction_map"].astype(np.float32)
    own = [mask_to_interaction_map(m, (8, 8)).numpy() for m in masks]
    # rows 1 and 3 of the batch (evenly spread) take the mask of the row half a batch away: 3 and 1
    for row, source in ((0, 0), (1, 3), (2, 2), (3, 1)):
        np.testing.assert_allclose(maps[row], own[source], atol=1e-3)
    every = dataset.map(MaskInteractionMapFn(grid=(8, 8), wrong_object=1.0), batched=True, batch_size=4)
    assert not np.allclose(every.with_format("numpy")[:]["interaction_map"][0].astype(np.float32), own[0], atol=1e-3)
    single = dataset.select([0]).map(MaskInteractionMapFn(grid=(8, 8), wrong_object=1.0), batched=True)
    turned = mask_to_interaction_map(np.array(masks[0])[::-1, ::-1], (8, 8)).numpy()
    np.testing.assert_allclose(single.with_format("numpy")[0]["interaction_map"].astype(np.float32), turned, atol=1e-3)
    with pytest.raises(ValueError, match="wrong_object is a share of rows"):
        MaskInteractionMapFn(wrong_object=1.5)


def test_map_functions_refuse_non_finite_inputs_and_boxes_outside_the_image():
    from hf_lfi.interactions import contrast_map, crop_interaction_map

    mask = np.ones((8, 8), np.float32)
    mask[0, 0] = np.nan  # NaN > 0 is False: it would silently count as background
    with pytest.raises(ValueError, match="A mask has NaN or infinite values"):
        mask_to_interaction_map(mask, (4, 4))
    with pytest.raises(ValueError, match="A mask is empty \\(shape \\(0, 8\\)\\)"):  # a raw pooling error before
        mask_to_interaction_map(np.zeros((0, 8), np.uint8), (4, 4))
    with pytest.raises(ValueError, match="contrast_map got NaN or infinite attention maps"):
        contrast_map([torch.tensor([float("nan"), 1.0])])
    with pytest.raises(ValueError, match="box \\(50, 50, 60, 60\\) .* not inside the 32x32 image"):
        crop_interaction_map(torch.full((4, 4), 1 / 16), (50, 50, 60, 60), (32, 32))
