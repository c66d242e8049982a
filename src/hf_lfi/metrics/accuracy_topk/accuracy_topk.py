"""Top-1 and top-k accuracy from class scores, as an `evaluate` module loadable offline by path."""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
Accuracy of the arg-max class (top-1) and the share of examples whose reference is among the k highest scores
(top-k, default k = 5), from the model's logits (or any scores, one row per example). A class scored the same as
the reference counts against it (constant logits are no hit), and a row with NaN scores is a miss.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `float`): class scores (logits), one row of num_classes values per example.
    references (`list` of `int`): the true class ids (integral values; 1.5 is an error, not class 1).
    top_k (`int` or `list` of `int`, defaults to 5): the k of the top-k accuracies reported besides top-1, at most
        the number of classes.
Returns:
    accuracy (`float`): top-1 accuracy in [0, 1].
    top{k}_accuracy (`float`): top-k accuracy in [0, 1], for each k asked for.
Examples:
    >>> metric = evaluate.load("path/to/hf_lfi/metrics/accuracy_topk")
    >>> metric.compute(predictions=[[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]], references=[1, 2], top_k=2)
    {'accuracy': 0.5, 'top2_accuracy': 0.5}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class AccuracyTopk(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("float32")), "references": datasets.Value("float64")}
            ),
        )

    def _compute(self, predictions, references, top_k=5):
        scores = np.asarray(predictions, dtype=np.float64)
        ids = np.asarray(references, dtype=np.float64)
        if scores.ndim != 2:
            raise ValueError(
                f"predictions must be class scores of shape (examples, classes), got shape {scores.shape}."
            )
        if len(scores) == 0:
            raise ValueError("No predictions to score.")
        if (ids != np.round(ids)).any():
            raise ValueError(
                f"references must be integral class ids, got {sorted(set(ids[ids != np.round(ids)].tolist()))[:5]}."
            )
        references = ids.astype(np.int64)
        num_classes = scores.shape[1]
        if ((references < 0) | (references >= num_classes)).any():
            raise ValueError(
                f"references must be class ids in [0, {num_classes}), got {sorted(set(references.tolist()))}."
            )
        ks = [top_k] if isinstance(top_k, int) else list(top_k)
        if any(not 1 <= k <= num_classes for k in ks):
            raise ValueError(f"top_k must be in [1, {num_classes}] (the number of classes), got {top_k}.")
        # rank of the reference = number of other classes scored at least as high: ties count against it
        reference_scores = scores[np.arange(len(scores)), references]
        rank = (scores >= reference_scores[:, None]).sum(axis=1) - 1
        rank[np.isnan(scores).any(axis=1)] = num_classes  # a diverged row is a miss at every k
        results = {"accuracy": float((rank < 1).mean())}
        for k in ks:
            results[f"top{k}_accuracy"] = float((rank < k).mean())
        return results
