"""Instance segmentation for I-DETR / DETR: instance masks in the data, mask AP through the image processor's
post-processing, and `hf-lfi train --task segmentation` (the recipe; tiny models, CPU)."""

import json

import numpy as np
import pytest
import torch
from conftest import tiny_segmentation_kwargs
from datasets import DatasetDict
from PIL import Image
from pycocotools import mask as coco_mask
from synthetic import make_image_dataset
from transformers import AutoModelForImageSegmentation, DetrImageProcessorPil
from transformers.trainer_utils import EvalPrediction

import hf_lfi
from hf_lfi import metrics, recipe
from hf_lfi.training.detection import DetectionTransform, SegmentationMetrics, collate_detection


def rectangle(height: int, width: int, top: int, left: int, bottom: int, right: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    mask[top:bottom, left:right] = True
    return mask


def box(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


def rle(mask: np.ndarray) -> dict:
    encoded = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": encoded["size"], "counts": encoded["counts"].decode()}


PROCESSOR = DetrImageProcessorPil(size={"shortest_edge": 32, "longest_edge": 64})


def test_instance_masks_from_polygons_rle_and_a_mask_column():
    first, second = rectangle(40, 60, 5, 10, 25, 40), rectangle(40, 60, 20, 35, 40, 55)
    polygon = [[10.0, 5.0, 40.0, 5.0, 40.0, 25.0, 10.0, 25.0]]  # x, y corners of `first`
    # `second` as column-major runs, zeros first: 35 empty columns + 20 rows, then 20 columns of 20 ones / 20 zeros
    uncompressed = {"size": [40, 60], "counts": [35 * 40 + 20, 20, *[20, 20] * 19, 5 * 40]}
    rows = {
        "image": [Image.new("RGB", (60, 40))] * 2,
        "objects": [
            {"bbox": [box(first), box(second)], "category": [0, 2], "segmentation": [polygon, rle(second)]},
            {"bbox": [box(second)], "category": [1], "segmentation": [uncompressed]},
        ],
    }
    out = DetectionTransform(PROCESSOR, num_labels=3, instance_masks=True)(rows)
    labels = out["labels"][0]
    assert out["pixel_values"][0].shape == (3, 32, 48) and labels["masks"].shape == (2, 32, 48)
    assert labels["masks"].dtype == torch.bool
    # resized like the image (x 0.8): the rectangles' corners land on whole pixels
    assert torch.equal(labels["masks"][0], torch.from_numpy(rectangle(32, 48, 4, 8, 20, 32)))
    assert torch.equal(labels["orig_masks"][0].bool(), torch.from_numpy(first))
    assert torch.equal(labels["orig_masks"][1].bool(), torch.from_numpy(second))
    assert torch.equal(out["labels"][1]["orig_masks"][0].bool(), torch.from_numpy(second))

    masks = make_image_dataset(2, size=32)[:2]
    rows = {
        "image": masks["image"],
        "mask": masks["mask"],
        "objects": [{"bbox": [box(np.asarray(m) > 0)], "category": [0]} for m in masks["mask"]],
    }
    out = DetectionTransform(PROCESSOR, 3, instance_masks=True, instance_mask_column="mask")(rows)
    for labels, mask in zip(out["labels"], masks["mask"]):
        assert labels["masks"].shape == (1, 32, 32)
        assert torch.equal(labels["masks"][0], torch.from_numpy(np.asarray(mask) > 0))


@pytest.mark.parametrize(
    "objects,mask,message",
    [
        ({"bbox": [[1.0, 1.0, 4.0, 4.0]], "category": [0]}, None, "need `objects\\['segmentation'\\]`"),
        (
            {"bbox": [[1.0, 1.0, 4.0, 4.0]], "category": [0], "segmentation": [rle(rectangle(16, 20, 1, 1, 5, 5))]},
            None,
            "Row 0: an RLE mask of size 20x16 \\(width x height\\) for the 30x20 image",
        ),
        (
            {"bbox": [[1.0, 1.0, 4.0, 4.0]], "category": [0], "segmentation": [rle(rectangle(20, 30, 0, 0, 0, 0))]},
            None,
            "Row 0: instance mask 0 is empty",
        ),
        (
            {
                "bbox": [[1.0, 1.0, 4.0, 4.0], [2.0, 2.0, 4.0, 4.0]],
                "category": [0, 1],
                "segmentation": [[[1, 1, 5, 1, 5, 5]]],
            },
            None,
            "Row 0: 1 instance masks but 2 boxes",
        ),
        (
            {"bbox": [[1.0, 1.0, 4.0, 4.0]], "category": [0]},
            np.ones((20, 20), np.uint8),
            "mask 0 is 20x20, the image 30x20",
        ),
        ({"bbox": [[1.0, 1.0, 4.0, 4.0]], "category": [0]}, np.zeros((20, 30), np.uint8), "instance mask 0 is empty"),
    ],
)
def test_bad_instance_masks_name_their_row(objects, mask, message):
    rows = {"image": [Image.new("RGB", (30, 20))], "objects": [objects]}
    column = None
    if mask is not None:
        rows["mask"], column = [Image.fromarray(mask * 255)], "mask"
    with pytest.raises(ValueError, match=message):
        DetectionTransform(PROCESSOR, 3, instance_masks=True, instance_mask_column=column)(rows)


def test_perfect_predictions_score_mask_and_box_ap_one_through_post_processing():
    """Two images of different sizes in one padded batch; the second is padded on the right, so its masks are right
    only if post-processing crops its own region before resizing it to the original size."""
    masks = [[rectangle(40, 60, 5, 10, 25, 40)], [rectangle(32, 32, 4, 4, 12, 20), rectangle(32, 32, 16, 10, 30, 30)]]
    rows = {
        "image": [Image.new("RGB", (60, 40)), Image.new("RGB", (32, 32))],
        "objects": [
            {
                "bbox": [box(m) for m in image_masks],
                "category": list(range(len(image_masks))),
                "segmentation": [rle(m) for m in image_masks],
            }
            for image_masks in masks
        ],
    }
    out = DetectionTransform(PROCESSOR, num_labels=3, instance_masks=True)(rows)
    batch = collate_detection([{key: out[key][i] for key in out} for i in range(2)])
    assert batch["pixel_values"].shape == (2, 3, 32, 48)
    logits = torch.full((2, 5, 4), -10.0)
    logits[..., 3] = 10.0  # "no object"
    pred_boxes = torch.full((2, 5, 4), 0.5)
    pred_masks = torch.full((2, 5, 32, 48), -10.0)
    for i, target in enumerate(batch["labels"]):
        for q, (label, target_box, mask) in enumerate(zip(target["class_labels"], target["boxes"], target["masks"])):
            logits[i, q, 3], logits[i, q, label] = -10.0, 10.0
            pred_boxes[i, q] = target_box
            pred_masks[i, q, : mask.shape[0], : mask.shape[1]][mask] = 10.0
    compute = SegmentationMetrics(PROCESSOR, metrics.load("coco_map", config_name="segm"))
    predictions = EvalPrediction(predictions=(logits, pred_boxes, pred_masks), label_ids=batch["labels"])
    assert compute(predictions) == {}  # accumulates until the last batch
    result = compute(predictions, compute_result=True)
    assert result["mask_map"] == pytest.approx(1.0) and result["mask_map_75"] == pytest.approx(1.0)
    assert result["map"] == pytest.approx(1.0)
    assert compute.predictions == [] and compute.references == []


@pytest.fixture(scope="module")
def segmentation_data(tmp_path_factory):
    """The synthetic squares as single-object rows (a `bbox` column, the `mask` column as instance mask)."""
    root = tmp_path_factory.mktemp("segmentation")

    def with_box(dataset):
        return dataset.map(lambda row: {"bbox": box(np.asarray(row["mask"]) > 0)})

    splits = {"train": with_box(make_image_dataset(16)), "validation": with_box(make_image_dataset(8, seed=1))}
    DatasetDict(splits).save_to_disk(str(root / "data"))
    hf_lfi.IDetrConfig(**tiny_segmentation_kwargs()).save_pretrained(root / "config")
    return root


def segmentation_argv(root, output_dir, *extra):
    return [
        "--task",
        "segmentation",
        "--config_name",
        str(root / "config"),
        "--dataset_name",
        str(root / "data"),
        "--bbox_column",
        "bbox",
        "--instance_mask_column",
        "mask",
        "--teacher",
        "mask",
        "--mask_teacher_grid",
        "8",
        "--detection_shortest_edge",
        "32",
        "--detection_longest_edge",
        "48",
        "--output_dir",
        str(output_dir),
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "4",
        "--per_device_eval_batch_size",
        "4",
        "--learning_rate",
        "1e-4",
        "--logging_steps",
        "1",
        "--save_strategy",
        "no",
        "--report_to",
        "none",
        "--seed",
        "0",
        "--use_cpu",
        "true",
        *extra,
    ]


@pytest.mark.parametrize("method", ["idetr", "detr"])
def test_segmentation_runs_end_to_end(segmentation_data, tmp_path, method):
    results = recipe.main(segmentation_argv(segmentation_data, tmp_path, "--method", method))
    keys = {"validation_mask_map", "validation_mask_map_50", "validation_map", "validation_map_small"}
    assert keys <= set(results) and all(-1 <= results[key] <= 1 for key in keys)
    logs = [e for e in json.loads((tmp_path / "trainer_state.json").read_text())["log_history"] if "loss" in e]
    model = AutoModelForImageSegmentation.from_pretrained(tmp_path)
    if method == "idetr":
        assert {"alignment_loss", "loss_mask", "loss_dice", "gate_g1/layer_0"} <= set(logs[0])
        assert isinstance(model, hf_lfi.IDetrForSegmentation)
    else:
        assert type(model).__name__ == "DetrForSegmentation" and "alignment_loss" not in logs[0]
    assert model.config.id2label[0] == "red"


def test_segmentation_needs_instance_masks(segmentation_data, tmp_path):
    argv = segmentation_argv(segmentation_data, tmp_path)
    del argv[argv.index("--instance_mask_column") : argv.index("--instance_mask_column") + 2]
    with pytest.raises(ValueError, match="instance masks need `objects\\['segmentation'\\]`"):
        recipe.main([*argv, "--train_augmentation", "false"])


def test_segmentation_evaluation_on_several_processes_is_refused(segmentation_data, tmp_path, monkeypatch):
    monkeypatch.setattr(hf_lfi.InteractionTrainingArguments, "world_size", property(lambda self: 2))
    with pytest.raises(ValueError, match="Segmentation is evaluated on one process"):
        recipe.main(segmentation_argv(segmentation_data, tmp_path))
