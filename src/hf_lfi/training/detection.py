"""Object-detection and instance-segmentation data for I-DETR / DETR training: COCO-format rows through the DETR
image processor, a collator that pads images (with their pixel masks), and COCO box/mask mAP for
`Trainer.compute_metrics`."""

import logging

import numpy as np
import torch

from ..columns import require_columns

logger = logging.getLogger(__name__)

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
# the rows' instance masks at the original image size, the exact references of the mask AP
ORIG_MASKS = "orig_masks"


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """A binary (height, width) mask as COCO's uncompressed RLE: run lengths in column-major order, zeros first."""
    pixels = mask.ravel(order="F").astype(np.int8)
    starts = np.flatnonzero(np.diff(pixels)) + 1
    counts = np.diff(np.concatenate([[0], starts, [pixels.size]])).tolist()
    return {"size": list(mask.shape), "counts": [0, *counts] if pixels[0] else counts}


def decode_coco_segmentation(segmentation, height: int, width: int, row: int) -> np.ndarray:
    """One object's COCO `segmentation` (a list of polygons, or an RLE `{"size": [h, w], "counts": str | list}`) as a
    boolean (height, width) mask of its image."""
    from pycocotools import mask as coco_mask

    if isinstance(segmentation, dict):
        size = [int(s) for s in segmentation["size"]]
        if size != [height, width]:
            raise ValueError(
                f"Row {row}: an RLE mask of size {size[1]}x{size[0]} (width x height) for the {width}x{height} image."
            )
        counts = segmentation["counts"]
        if isinstance(counts, list):
            rle = coco_mask.frPyObjects({"size": size, "counts": counts}, height, width)
        else:
            rle = {"size": size, "counts": counts.encode() if isinstance(counts, str) else counts}
    else:
        rle = coco_mask.merge(coco_mask.frPyObjects([list(p) for p in segmentation], height, width))
    return coco_mask.decode(rle).astype(bool)


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
    and normalised center boxes, plus `orig_size`/`size`) and, when `map_column` is given, the teacher maps.

    With `instance_masks=True` (segmentation) the targets also get `masks` (one boolean mask per box at the processed
    image size, resized by the image processor like the image, unpadded) and `orig_masks` (the same at the original
    size, for the mask AP). Each object's mask comes from `objects["segmentation"]` (COCO polygons or RLE) or, for
    single-object rows, from `instance_mask_column` (a mask image, foreground > 0).
    """

    def __init__(
        self,
        image_processor,
        num_labels: int,
        image_column: str = "image",
        objects_column: str = "objects",
        map_column: str | None = None,
        valid_column: str | None = None,
        instance_masks: bool = False,
        instance_mask_column: str | None = None,
    ):
        if instance_mask_column is not None and not instance_masks:
            raise ValueError("instance_mask_column gives instance masks: set instance_masks=True as well.")
        self.image_processor = image_processor
        self.num_labels = num_labels
        self.image_column = image_column
        self.objects_column = objects_column
        self.map_column = map_column
        self.valid_column = valid_column
        self.instance_masks = instance_masks
        self.instance_mask_column = instance_mask_column

    def __call__(self, batch: dict) -> dict:
        require_columns(batch, self.image_column, self.objects_column, self.map_column, self.instance_mask_column)
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
            masks = self._instance_masks(batch, row, objects, *image.size, len(boxes)) if self.instance_masks else []
            for annotation, mask in zip(annotations["annotations"], masks):
                annotation["segmentation"] = _uncompressed_rle(mask)  # the processor resizes it with the image
            encoded = self.image_processor(
                images=[image],
                annotations=[annotations],
                return_tensors="pt",
                do_pad=False,
                return_segmentation_masks=self.instance_masks,
            )
            out["pixel_values"].append(encoded["pixel_values"][0])
            labels = {key: encoded["labels"][0][key] for key in _LABEL_KEYS}
            if self.instance_masks:
                labels["masks"] = encoded["labels"][0]["masks"]
                labels[ORIG_MASKS] = torch.from_numpy(np.stack(masks))
            out["labels"].append(labels)
        if self.map_column is not None:
            out[self.map_column] = [torch.as_tensor(np.asarray(m, dtype=np.float32)) for m in batch[self.map_column]]
            if self.valid_column is not None and self.valid_column in batch:
                out[self.valid_column] = [bool(v) for v in batch[self.valid_column]]
        return out

    def _instance_masks(self, batch: dict, row: int, objects: dict, width: int, height: int, count: int) -> list:
        """The row's boolean (height, width) instance masks, one per box, checked."""
        if self.instance_mask_column is not None:
            mask = np.asarray(batch[self.instance_mask_column][row])
            masks = [(mask.max(-1) if mask.ndim == 3 else mask) > 0]
        elif objects.get("segmentation") is None:
            raise ValueError(
                f"Row {row}: instance masks need `{self.objects_column}['segmentation']` (COCO polygons or RLE per "
                "object) or a mask column (instance_mask_column) for single-object rows."
            )
        else:
            masks = [decode_coco_segmentation(s, height, width, row) for s in objects["segmentation"]]
        if len(masks) != count:
            raise ValueError(f"Row {row}: {len(masks)} instance masks but {count} boxes: one mask per object.")
        for j, mask in enumerate(masks):
            if mask.shape != (height, width):
                raise ValueError(
                    f"Row {row}: instance mask {j} is {mask.shape[1]}x{mask.shape[0]}, the image {width}x{height}."
                )
            if not mask.any():
                raise ValueError(f"Row {row}: instance mask {j} is empty (no object pixel).")
        return masks


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


def _coco_reference(target: dict) -> dict:
    """A DETR target (normalised center boxes) as `coco_map`'s reference: absolute COCO boxes in the original size."""
    height, width = (int(s) for s in target["orig_size"])
    boxes = torch.as_tensor(target["boxes"]).cpu().reshape(-1, 4) * torch.tensor([width, height, width, height])
    corner = torch.stack([boxes[:, 0] - boxes[:, 2] / 2, boxes[:, 1] - boxes[:, 3] / 2, boxes[:, 2], boxes[:, 3]], 1)
    return {"boxes": corner.tolist(), "labels": torch.as_tensor(target["class_labels"]).cpu().tolist()}


def _encode_rle(mask: torch.Tensor) -> dict:
    """A (height, width) binary mask as COCO RLE with `str` counts."""
    from pycocotools import mask as coco_mask

    rle = coco_mask.encode(np.asfortranarray(mask.cpu().numpy().astype(np.uint8)))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode()}


def make_detection_metrics(image_processor, coco_map, threshold: float = 0.0):
    """`compute_metrics` for `Trainer(..., args.eval_do_concat_batches=False)` evaluated with
    `ignore_keys=PREDICTION_IGNORE_KEYS`: DETR-family outputs post-processed by `image_processor` (DETR's softmax or
    Conditional-DETR's sigmoid top-k) to absolute boxes in each image's original size, targets converted back to COCO
    boxes, then `coco_map`."""
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
            references.extend(_coco_reference(target) for target in batch_targets)
        return coco_map.compute(predictions=predictions, references=references)

    return compute_metrics


class SegmentationMetrics:
    """`compute_metrics` of instance segmentation for `Trainer(..., args.batch_eval_metrics=True)` evaluated with
    `ignore_keys=PREDICTION_IGNORE_KEYS` (predictions: logits, pred_boxes, pred_masks of DETR).

    Boxes go through the image processor's `post_process_object_detection`. Masks follow DETR's own evaluation
    (`PostProcessSegm` of facebookresearch/detr): every query with its class score, its mask upsampled to the padded
    batch, cropped to its image's region, binarised at `mask_threshold` and resized to the original size.
    (`post_process_instance_segmentation` gives every pixel to some query, background included, so even perfect
    predictions would score a mask AP of 0.5.) Only boxes and COCO RLEs are kept between batches (an eval set's
    `pred_masks` would not fit in memory); the last batch returns `coco_map` ("segm") box and mask APs against the
    targets' original-size masks (`orig_masks`)."""

    def __init__(self, image_processor, coco_map, threshold: float = 0.0, mask_threshold: float = 0.5):
        self.image_processor = image_processor
        self.coco_map = coco_map
        self.threshold = threshold
        self.mask_threshold = mask_threshold
        self.predictions, self.references = [], []

    def __call__(self, evaluation, compute_result: bool = False) -> dict:
        from transformers.models.detr.modeling_detr import DetrObjectDetectionOutput

        logits, pred_boxes, pred_masks = (torch.as_tensor(x) for x in evaluation.predictions)
        targets = evaluation.label_ids
        sizes = [tuple(int(s) for s in target["orig_size"]) for target in targets]
        detected = self.image_processor.post_process_object_detection(
            DetrObjectDetectionOutput(logits=logits, pred_boxes=pred_boxes),
            threshold=self.threshold,
            target_sizes=sizes,
        )
        scores, labels = logits.softmax(-1)[..., :-1].max(-1)  # the last class is "no object"
        # collate_detection pads every image at the bottom/right to the batch's largest processed size, and
        # pred_masks cover that padded canvas: crop each image's own region before resizing it to its original size
        processed = [tuple(int(s) for s in target["size"]) for target in targets]
        padded = (max(h for h, _ in processed), max(w for _, w in processed))
        for i, (target, boxes, (height, width)) in enumerate(zip(targets, detected, processed)):
            keep = scores[i] > self.threshold
            masks = torch.nn.functional.interpolate(
                pred_masks[i : i + 1, keep].float(), size=padded, mode="bilinear", align_corners=False
            )[..., :height, :width]
            masks = (masks.sigmoid() > self.mask_threshold).float()
            masks = torch.nn.functional.interpolate(masks, size=sizes[i], mode="nearest")[0].bool()
            self.predictions.append(
                {
                    **{key: boxes[key].tolist() for key in ("boxes", "scores", "labels")},
                    "masks": [_encode_rle(mask) for mask in masks],
                    "mask_scores": scores[i, keep].tolist(),
                    "mask_labels": labels[i, keep].tolist(),
                }
            )
            reference = _coco_reference(target)
            reference["masks"] = [_encode_rle(mask) for mask in torch.as_tensor(target[ORIG_MASKS])]
            self.references.append(reference)
        if not compute_result:
            return {}
        predictions, references = self.predictions, self.references
        self.predictions, self.references = [], []
        return self.coco_map.compute(predictions=predictions, references=references)


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
    short = {c: n for c, n in sorted(available.items()) if n < shots}
    if short:
        logger.warning(
            "--few_shot %d: %d categories have fewer objects in the training rows (category: objects %s); they "
            "keep all they have.",
            shots,
            len(short),
            ", ".join(f"{c}: {n}" for c, n in list(short.items())[:10]),
        )
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
    "ORIG_MASKS",
    "PREDICTION_IGNORE_KEYS",
    "SegmentationMetrics",
    "decode_coco_segmentation",
    "few_shot_subset",
    "single_object_detection",
    "DetectionTransform",
    "check_coco_boxes",
    "collate_detection",
    "make_detection_metrics",
]
