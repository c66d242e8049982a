"""The metrics a run reports per task, from the `evaluate` modules shipped with the package (offline): top-1 and
top-k accuracy, COCO box mAP, and box + mask mAP for segmentation."""

import numpy as np

from .. import metrics


def classification_metrics(top_k: int, num_labels: int):
    """`compute_metrics` of image classification: accuracy and top-`top_k` accuracy (k capped at the classes)."""
    accuracy = metrics.load("accuracy_topk")
    k = min(top_k, num_labels)

    def compute_metrics(prediction):
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        return accuracy.compute(predictions=np.asarray(logits), references=prediction.label_ids, top_k=k)

    return compute_metrics


def detection_metrics(image_processor, segmentation: bool):
    """`compute_metrics` of detection (COCO box mAP of the post-processed boxes) or, batch by batch, of
    segmentation (box and mask mAP; `batch_eval_metrics`: the eval set's masks would not fit in memory)."""
    from ..training.detection import SegmentationMetrics, make_detection_metrics

    if segmentation:
        return SegmentationMetrics(image_processor, metrics.load("coco_map", config_name="segm"))
    return make_detection_metrics(image_processor, metrics.load("coco_map"))


__all__ = ["classification_metrics", "detection_metrics"]
