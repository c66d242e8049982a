"""Closeness of interaction maps to ground-truth masks (the paper's human-alignment measure, Fig. 6), as an
`evaluate` module loadable offline by path."""

import datasets
import evaluate
import numpy as np
import torch

from hf_lfi.interactions.maps import mask_to_grid

_DESCRIPTION = """
How well attention maps agree with ground-truth masks (paper Fig. 6: C_AGT > C_VLM > C_VFM). Each mask is
area-pooled onto the map's grid (the covered fraction of every cell). Reported, averaged over examples:
cosine similarity between the map and the pooled mask, and IoU between the map's k highest cells and the cells
the mask covers by at least half (k = that number of cells, unless `top_k` is given).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of 2-d arrays): non-negative maps, not all zero, e.g. `interaction_maps` of an I-model or a
        teacher map (leave out invalid teacher rows: their maps are all zero).
    references (`list` of 2-d or 3-d arrays): masks at any resolution, (height, width) or (height, width, channels)
        such as an RGB mask; foreground is any value > 0 (in any channel); each needs a foreground pixel.
    top_k (`int`, optional): a fixed number (>= 1) of top cells for the IoU instead of the mask's cell count.
Returns:
    cosine_similarity (`float`): mean cosine similarity in [0, 1].
    iou_at_top_k (`float`): mean IoU in [0, 1].
Examples:
    >>> metric = evaluate.load("path/to/hf_lfi/metrics/interaction_alignment")
    >>> metric.compute(predictions=[[[0.0, 1.0], [0.0, 0.0]]], references=[[[0, 255], [0, 0]]])
    {'cosine_similarity': 1.0, 'iou_at_top_k': 1.0}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class InteractionAlignment(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=[  # (height, width) masks, or (height, width, channels) ones such as RGB masks
                datasets.Features(
                    {
                        "predictions": datasets.Sequence(datasets.Sequence(datasets.Value("float32"))),
                        "references": datasets.Sequence(datasets.Sequence(datasets.Value("float32"))),
                    }
                ),
                datasets.Features(
                    {
                        "predictions": datasets.Sequence(datasets.Sequence(datasets.Value("float32"))),
                        "references": datasets.Sequence(
                            datasets.Sequence(datasets.Sequence(datasets.Value("float32")))
                        ),
                    }
                ),
            ],
        )

    def _infer_feature_from_batch(self, batch):
        # an empty batch has no example to pick the mask format by; `_compute` refuses it with a clear message
        if not any(len(values) for values in batch.values()):
            return self.features[0]
        return super()._infer_feature_from_batch(batch)

    def _compute(self, predictions, references, top_k=None):
        if len(predictions) == 0:
            raise ValueError("No predictions to score: give at least one map and its mask.")
        if top_k is not None and (not float(top_k).is_integer() or top_k < 1):
            raise ValueError(f"top_k must be a whole number of cells >= 1, got {top_k}.")
        cosines, ious = [], []
        for index, (prediction, reference) in enumerate(zip(predictions, references)):
            attention = torch.as_tensor(np.asarray(prediction, dtype=np.float32))
            if attention.ndim != 2:
                raise ValueError(f"Prediction {index} must be a 2-d map, got shape {tuple(attention.shape)}.")
            if not torch.isfinite(attention).all() or (attention < 0).any():
                raise ValueError(f"Prediction {index} must be finite and non-negative.")
            if attention.sum() == 0:
                raise ValueError(f"Prediction {index} is all zero: no map to score (leave invalid teacher rows out).")
            coverage = mask_to_grid(np.asarray(reference), tuple(attention.shape)).flatten()
            if coverage.sum() == 0:
                raise ValueError(f"Reference {index} has no foreground pixel: no mask to compare the map with.")
            attention = attention.flatten()
            norm = attention.norm() * coverage.norm()
            cosines.append(float(attention @ coverage / norm) if norm > 0 else 0.0)
            mask_cells = coverage >= 0.5
            k = int(top_k) if top_k is not None else max(1, int(mask_cells.sum()))
            top = torch.zeros_like(mask_cells)
            top[attention.topk(min(k, attention.numel())).indices] = True
            union = (top | mask_cells).sum()
            ious.append(float((top & mask_cells).sum() / union))
        return {"cosine_similarity": float(np.mean(cosines)), "iou_at_top_k": float(np.mean(ious))}
