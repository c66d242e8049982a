"""Object-detection data for I-DETR / DETR training: COCO-format rows through the DETR image processor, a collator
that pads images (with their pixel masks), and COCO mAP for `Trainer.compute_metrics`."""

import numpy as np
import torch

from ..columns import require_columns

# per image, what the detection transform passes on besides pixel_values / pixel_mask
_LABEL_KEYS = ("class_labels", "boxes", "orig_size", "size")
# model outputs left out of evaluation predictions (`ignore_keys`), so they are (logits, pred_boxes) for DETR and I-DETR
PREDICTION_IGNORE_KEYS = [
    "loss_dict",
    "auxiliary_outputs",
    "last_hidden_state",
    "decoder_hidden_states",
    "decoder_attentions",
    "cross_attentions",
    "encoder_last_hidden_state",
    "encoder_hidden_states",
    "encoder_attentions",
    "interaction_maps",
    "gates",
    "interaction_mask",
]


def check_coco_boxes(boxes, width: int, height: int, row: int) -> None:
    """COCO (x, y, width, height) boxes must have a positive size and lie inside the image (1 px tolerance)."""
    for x, y, w, h in boxes:
        if w <= 0 or h <= 0 or x < -1 or y < -1 or x + w > width + 1 or y + h > height + 1:
            raise ValueError(
                f"Row {row}: box {[x, y, w, h]} (COCO x, y, width, height) lies outside the {width}x{height} image or is empty."
            )


class DetectionTransform:
    """`dataset.set_transform` callable for COCO-format rows: `image` and `objects` = {`bbox`: COCO x, y, w, h in
    pixels, `category`: ids}. Emits `pixel_values` (unpadded, the collator pads), `labels` (DETR's targets: class ids
    and normalised center boxes, plus `orig_size`/`size`) and, when `map_column` is given, the teacher maps."""

    def __init__(
        self,
        image_processor,
        num_labels: int,
        image_column: str = "image",
        objects_column: str = "objects",
        map_column: str | None = None,
        valid_column: str | None = None,
    ):
        self.image_processor = image_processor
        self.num_labels = num_labels
        self.image_column = image_column
        self.objects_column = objects_column
        self.map_column = map_column
        self.valid_column = valid_column

    def __call__(self, batch: dict) -> dict:
        require_columns(batch, self.image_column, self.objects_column, self.map_column)
        out = {"pixel_values": [], "labels": []}
        for row, (image, objects) in enumerate(zip(batch[self.image_column], batch[self.objects_column])):
            image = image.convert("RGB")
            boxes, categories = list(objects["bbox"]), [int(c) for c in objects["category"]]
            if len(boxes) != len(categories):
                raise ValueError(f"Row {row}: {len(boxes)} boxes but {len(categories)} categories.")
            unknown = sorted({c for c in categories if not 0 <= c < self.num_labels})
            if unknown:
                raise ValueError(
                    f"Row {row}: unknown category ids {unknown} (the model has num_labels={self.num_labels})."
                )
            check_coco_boxes(boxes, *image.size, row)
            annotations = {
                "image_id": row,
                "annotations": [
                    {"bbox": list(box), "category_id": c, "area": float(box[2] * box[3]), "iscrowd": 0}
                    for box, c in zip(boxes, categories)
                ],
            }
            encoded = self.image_processor(
                images=[image], annotations=[annotations], return_tensors="pt", do_pad=False
            )
            out["pixel_values"].append(encoded["pixel_values"][0])
            out["labels"].append({key: encoded["labels"][0][key] for key in _LABEL_KEYS})
        if self.map_column is not None:
            out[self.map_column] = [torch.as_tensor(np.asarray(m, dtype=np.float32)) for m in batch[self.map_column]]
            if self.valid_column is not None and self.valid_column in batch:
                out[self.valid_column] = [bool(v) for v in batch[self.valid_column]]
        return out


def collate_detection(examples: list[dict]) -> dict:
    """Pad images at the bottom/right to the batch's largest size with a `pixel_mask` (1 = real pixel), keep the
    targets as a list of dicts, stack teacher maps and validity flags."""
    height = max(e["pixel_values"].shape[1] for e in examples)
    width = max(e["pixel_values"].shape[2] for e in examples)
    pixel_values = torch.zeros(len(examples), examples[0]["pixel_values"].shape[0], height, width)
    pixel_mask = torch.zeros(len(examples), height, width, dtype=torch.long)
    for i, example in enumerate(examples):
        _, h, w = example["pixel_values"].shape
        pixel_values[i, :, :h, :w] = example["pixel_values"]
        pixel_mask[i, :h, :w] = 1
    batch = {"pixel_values": pixel_values, "pixel_mask": pixel_mask, "labels": [e["labels"] for e in examples]}
    for key in examples[0]:
        if key not in batch:
            values = [e[key] for e in examples]
            batch[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else torch.tensor(values)
    return batch


def make_detection_metrics(image_processor, coco_map, threshold: float = 0.0):
    """`compute_metrics` for `Trainer(..., args.eval_do_concat_batches=False)` evaluated with
    `ignore_keys=PREDICTION_IGNORE_KEYS`: DETR outputs post-processed to absolute boxes in each image's original
    size, targets converted back to COCO boxes, then `coco_map`."""
    from transformers.models.detr.modeling_detr import DetrObjectDetectionOutput

    def compute_metrics(evaluation) -> dict:
        predictions, references = [], []
        for batch_outputs, batch_targets in zip(evaluation.predictions, evaluation.label_ids):
            logits, pred_boxes = (torch.as_tensor(np.asarray(x)) for x in batch_outputs)
            sizes = [tuple(int(s) for s in target["orig_size"]) for target in batch_targets]
            outputs = DetrObjectDetectionOutput(logits=logits, pred_boxes=pred_boxes)
            for result in image_processor.post_process_object_detection(
                outputs, threshold=threshold, target_sizes=sizes
            ):
                predictions.append({key: result[key].tolist() for key in ("boxes", "scores", "labels")})
            for target, (height, width) in zip(batch_targets, sizes):
                boxes = torch.as_tensor(np.asarray(target["boxes"])).reshape(-1, 4) * torch.tensor(
                    [width, height, width, height]
                )
                corner = torch.stack(
                    [boxes[:, 0] - boxes[:, 2] / 2, boxes[:, 1] - boxes[:, 3] / 2, boxes[:, 2], boxes[:, 3]], dim=1
                )
                references.append({"boxes": corner.tolist(), "labels": np.asarray(target["class_labels"]).tolist()})
        return coco_map.compute(predictions=predictions, references=references)

    return compute_metrics


def single_object_detection(
    dataset, bbox_column: str = "bbox", label_column: str = "label", objects_column: str = "objects"
):
    """A single-object classification dataset (one COCO x, y, w, h box and one class id per row, e.g. emoji-shift) as
    a detection dataset: adds `objects_column` = {`bbox`: [box], `category`: [label]}, with the label's ClassLabel as
    the category feature; every other column stays (e.g. the mask teacher's `mask`)."""
    from datasets import ClassLabel, List, Value

    require_columns(dataset.column_names, bbox_column, label_column)
    label = dataset.features[label_column]
    category = ClassLabel(names=label.names) if isinstance(label, ClassLabel) else Value("int64")
    features = dataset.features.copy()
    features[objects_column] = {"bbox": List(List(Value("float32"), length=4)), "category": List(category)}
    return dataset.map(
        lambda box, label: {objects_column: {"bbox": [box], "category": [label]}},
        input_columns=[bbox_column, label_column],
        features=features,
        desc="single-object detection rows",
    )


def few_shot_subset(dataset, shots: int, seed: int = 0, objects_column: str = "objects"):
    """A k-shot detection subset (the few-shot protocol of the paper's VOC experiment): images drawn in a seeded
    random order and kept while they add an object of a category that still has fewer than `shots` objects, until
    every category present in `dataset` has at least `shots` (or all it has). Returns the selected rows in order."""
    if shots < 1:
        raise ValueError(f"shots must be >= 1, got {shots}.")
    categories = dataset[objects_column]
    available: dict[int, int] = {}
    for objects in categories:
        for c in objects["category"]:
            available[int(c)] = available.get(int(c), 0) + 1
    wanted = {c: min(shots, n) for c, n in available.items()}
    counts = dict.fromkeys(available, 0)
    chosen = []
    for index in np.random.default_rng(seed).permutation(len(dataset)).tolist():
        row = [int(c) for c in categories[index]["category"]]
        if any(counts[c] < wanted[c] for c in row):
            chosen.append(index)
            for c in row:
                counts[c] += 1
        if all(counts[c] >= wanted[c] for c in counts):
            break
    return dataset.select(sorted(chosen))


__all__ = [
    "PREDICTION_IGNORE_KEYS",
    "few_shot_subset",
    "single_object_detection",
    "DetectionTransform",
    "check_coco_boxes",
    "collate_detection",
    "make_detection_metrics",
]
