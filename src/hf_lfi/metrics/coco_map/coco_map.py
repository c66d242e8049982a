"""COCO box mAP (AP, AP50, AP75, AP small/medium/large) with pycocotools, as an `evaluate` module loadable offline."""

import contextlib
import io

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
COCO-style detection mAP computed by pycocotools' `COCOeval` (the reference implementation, so numbers compare with
published COCO results): AP averaged over IoU 0.50:0.95, AP at IoU 0.50 and 0.75, and AP for small (< 32^2 px),
medium and large objects. A size range without ground-truth objects reports -1, as pycocotools does.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `dict`): per image, `boxes` (absolute x0, y0, x1, y1, as `post_process_object_detection`
        returns them), `scores` and `labels`.
    references (`list` of `dict`): per image, `boxes` (absolute COCO x, y, width, height) and `labels`; optional
        `iscrowd`.
Returns:
    map, map_50, map_75, map_small, map_medium, map_large (`float`).
Examples:
    >>> metric = evaluate.load("path/to/hf_lfi/metrics/coco_map")
    >>> metric.compute(predictions=[{"boxes": [[10, 10, 50, 60]], "scores": [0.9], "labels": [1]}],
    ...                references=[{"boxes": [[10, 10, 40, 50]], "labels": [1]}])["map"]
    1.0
"""

_KEYS = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large")


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class CocoMap(evaluate.Metric):
    def _info(self):
        boxes = datasets.Sequence(datasets.Sequence(datasets.Value("float32")))
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": {
                        "boxes": boxes,
                        "scores": datasets.Sequence(datasets.Value("float32")),
                        "labels": datasets.Sequence(datasets.Value("int64")),
                    },
                    "references": {"boxes": boxes, "labels": datasets.Sequence(datasets.Value("int64"))},
                }
            ),
        )

    def _compute(self, predictions, references):
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        annotations, detections = [], []
        for image_id, (prediction, reference) in enumerate(zip(predictions, references)):
            boxes = np.asarray(reference["boxes"], dtype=np.float64).reshape(-1, 4)
            if len(boxes) != len(reference["labels"]):
                raise ValueError(f"Reference {image_id} has {len(boxes)} boxes but {len(reference['labels'])} labels.")
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
        if not annotations or not detections:
            return dict.fromkeys(_KEYS, 0.0 if annotations else -1.0)
        categories = sorted({a["category_id"] for a in annotations} | {d["category_id"] for d in detections})
        ground_truth = COCO()
        ground_truth.dataset = {
            "images": [{"id": i} for i in range(len(references))],
            "annotations": annotations,
            "categories": [{"id": c} for c in categories],
        }
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress and summary table
            ground_truth.createIndex()
            evaluation = COCOeval(ground_truth, ground_truth.loadRes(detections), iouType="bbox")
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
        return {key: float(value) for key, value in zip(_KEYS, evaluation.stats[:6])}
