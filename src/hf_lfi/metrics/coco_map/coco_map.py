"""COCO mAP with pycocotools, as an `evaluate` module loadable offline: box AP (config `"bbox"`, the default) or box
and instance-mask AP (config `"segm"`)."""

import contextlib
import io

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
COCO-style detection mAP computed by pycocotools' `COCOeval` (the reference implementation, so numbers compare with
published COCO results): AP averaged over IoU 0.50:0.95, AP at IoU 0.50 and 0.75, and AP for small (< 32^2 px),
medium and large objects. A size range without ground-truth objects reports -1, as pycocotools does. The `"segm"`
config also scores instance masks (`iouType="segm"`; object sizes are then mask areas, as in COCO).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `dict`): per image, `boxes` (absolute x0, y0, x1, y1, as `post_process_object_detection`
        returns them), `scores` and `labels`. Config `"segm"`: also `masks` (COCO RLE, `{"size": [height, width],
        "counts": str}` as `pycocotools.mask.encode` gives, at the image's size) with their own `mask_scores` and
        `mask_labels` (e.g. the segments of `post_process_instance_segmentation`).
    references (`list` of `dict`): per image, `boxes` (absolute COCO x, y, width, height) and `labels`. Config
        `"segm"`: also `masks`, one COCO RLE per box.
Returns:
    map, map_50, map_75, map_small, map_medium, map_large (`float`); config `"segm"` adds the same six for masks,
    prefixed `mask_` (mask_map, mask_map_50, ...).
Examples:
    >>> metric = evaluate.load("path/to/hf_lfi/metrics/coco_map")
    >>> metric.compute(predictions=[{"boxes": [[10, 10, 50, 60]], "scores": [0.9], "labels": [1]}],
    ...                references=[{"boxes": [[10, 10, 40, 50]], "labels": [1]}])["map"]
    1.0
"""

_KEYS = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large")
_MASK_KEYS = tuple(f"mask_{key}" for key in _KEYS)
_CONFIGS = ("bbox", "segm")


def _coco_eval(images: list[dict], annotations: list[dict], detections: list[dict], iou_type: str, keys) -> dict:
    """The six summary APs of `COCOeval` on in-memory ground truth and detections (-1 without ground truth, 0 without
    detections)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not annotations or not detections:
        return dict.fromkeys(keys, 0.0 if annotations else -1.0)
    categories = sorted({a["category_id"] for a in annotations} | {d["category_id"] for d in detections})
    ground_truth = COCO()
    ground_truth.dataset = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": c} for c in categories],
    }
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress and summary table
        ground_truth.createIndex()
        evaluation = COCOeval(ground_truth, ground_truth.loadRes(detections), iouType=iou_type)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return {key: float(value) for key, value in zip(keys, evaluation.stats[:6])}


def _rle(mask, what: str) -> dict:
    """A COCO RLE with `str` counts, checked to be one."""
    if (
        not isinstance(mask, dict)
        or not isinstance(mask.get("counts"), (str, bytes))
        or len(mask.get("size", ())) != 2
    ):
        raise ValueError(f"{what} is not a COCO RLE {{'size': [height, width], 'counts': str}}: {mask!r:.80}.")
    counts = mask["counts"].decode() if isinstance(mask["counts"], bytes) else mask["counts"]
    return {"size": [int(s) for s in mask["size"]], "counts": counts}


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class CocoMap(evaluate.Metric):
    def _info(self):
        if self.config_name not in ("default", *_CONFIGS):
            raise ValueError(f"coco_map configs are {_CONFIGS}, got {self.config_name!r}.")
        boxes = datasets.Sequence(datasets.Sequence(datasets.Value("float32")))
        scores = datasets.Sequence(datasets.Value("float32"))
        labels = datasets.Sequence(datasets.Value("int64"))
        predictions = {"boxes": boxes, "scores": scores, "labels": labels}
        references = {"boxes": boxes, "labels": labels}
        if self.config_name == "segm":
            masks = datasets.List({"size": datasets.List(datasets.Value("int64")), "counts": datasets.Value("string")})
            predictions.update(masks=masks, mask_scores=scores, mask_labels=labels)
            references["masks"] = masks
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": predictions, "references": references}),
        )

    def _compute(self, predictions, references):
        segm = self.config_name == "segm"
        images, annotations, detections, mask_annotations, mask_detections = [], [], [], [], []
        for image_id, (prediction, reference) in enumerate(zip(predictions, references)):
            boxes = np.asarray(reference["boxes"], dtype=np.float64).reshape(-1, 4)
            if len(boxes) != len(reference["labels"]):
                raise ValueError(f"Reference {image_id} has {len(boxes)} boxes but {len(reference['labels'])} labels.")
            if not np.isfinite(boxes).all():
                raise ValueError(f"Reference {image_id} has NaN or infinite box coordinates.")
            if (boxes[:, 2:] <= 0).any():
                raise ValueError(f"Reference {image_id} has a box of non-positive width or height (COCO x, y, w, h).")
            for box, label in zip(boxes, reference["labels"]):
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": int(label),
                        "bbox": box.tolist(),
                        "area": float(box[2] * box[3]),
                        "iscrowd": 0,
                    }
                )
            predicted = np.asarray(prediction["boxes"], dtype=np.float64).reshape(-1, 4)
            scores = np.asarray(prediction["scores"], dtype=np.float64)
            if not len(predicted) == len(scores) == len(prediction["labels"]):
                raise ValueError(
                    f"Prediction {image_id} has {len(predicted)} boxes, {len(scores)} scores and "
                    f"{len(prediction['labels'])} labels: every box needs one score and one label."
                )
            if not np.isfinite(scores).all() or not np.isfinite(predicted).all():
                raise ValueError(f"Prediction {image_id} has NaN or infinite scores or boxes.")
            if (predicted[:, 2:] < predicted[:, :2]).any():
                raise ValueError(
                    f"Prediction {image_id} has a box whose x1 < x0 or y1 < y0: prediction boxes are absolute corners "
                    "(x0, y0, x1, y1), as post_process_object_detection returns them, not COCO (x, y, w, h)."
                )
            for box, score, label in zip(predicted, prediction["scores"], prediction["labels"]):
                x0, y0, x1, y1 = box.tolist()
                detections.append(
                    {
                        "image_id": image_id,
                        "category_id": int(label),
                        "bbox": [x0, y0, x1 - x0, y1 - y0],
                        "score": float(score),
                    }
                )
            if segm:
                size = self._add_masks(image_id, prediction, reference, annotations, mask_annotations, mask_detections)
                images.append({"id": image_id, "height": size[0], "width": size[1]})
            else:
                images.append({"id": image_id})
        results = _coco_eval(images, annotations, detections, "bbox", _KEYS)
        if segm:
            results.update(_coco_eval(images, mask_annotations, mask_detections, "segm", _MASK_KEYS))
        return results

    @staticmethod
    def _add_masks(image_id, prediction, reference, annotations, mask_annotations, mask_detections) -> list[int]:
        """Appends one image's mask ground truth (the box annotations with their masks and mask areas) and mask
        detections; returns the image's (height, width), which every mask of the image must have."""
        from pycocotools import mask as coco_mask

        gt_masks = [_rle(m, f"Reference {image_id} mask {j}") for j, m in enumerate(reference["masks"])]
        if len(gt_masks) != len(reference["labels"]):
            raise ValueError(
                f"Reference {image_id} has {len(gt_masks)} masks but {len(reference['labels'])} boxes: one mask per box."
            )
        masks = [_rle(m, f"Prediction {image_id} mask {j}") for j, m in enumerate(prediction["masks"])]
        if not len(masks) == len(prediction["mask_scores"]) == len(prediction["mask_labels"]):
            raise ValueError(
                f"Prediction {image_id} has {len(masks)} masks, {len(prediction['mask_scores'])} mask_scores and "
                f"{len(prediction['mask_labels'])} mask_labels: every mask needs one score and one label."
            )
        sizes = {tuple(m["size"]) for m in gt_masks + masks}
        if len(sizes) > 1:
            raise ValueError(
                f"Image {image_id}'s masks have different sizes {sorted(sizes)}: every mask covers the whole image."
            )
        first = len(annotations) - len(gt_masks)
        for annotation, mask in zip(annotations[first:], gt_masks):
            mask_annotations.append({**annotation, "segmentation": mask, "area": float(coco_mask.area(mask))})
        for mask, score, label in zip(masks, prediction["mask_scores"], prediction["mask_labels"]):
            mask_detections.append(
                {"image_id": image_id, "category_id": int(label), "segmentation": mask, "score": float(score)}
            )
        return list(sizes.pop()) if sizes else [0, 0]
