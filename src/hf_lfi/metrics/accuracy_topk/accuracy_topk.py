"""Top-1 and top-k accuracy from class scores, as an `evaluate` module loadable offline by path."""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
Accuracy of the arg-max class (top-1) and the share of examples whose reference is among the k highest scores
(top-k, default k = 5), from the model's logits (or any scores, one row per example).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `float`): class scores (logits), one row of num_classes values per example.
    references (`list` of `int`): the true class ids.
    top_k (`int` or `list` of `int`, defaults to 5): the k of the top-k accuracies reported besides top-1.
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
                {"predictions": datasets.Sequence(datasets.Value("float32")), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, top_k=5):
        scores = np.asarray(predictions, dtype=np.float64)
        references = np.asarray(references, dtype=np.int64)
        if scores.ndim != 2:
            raise ValueError(f"predictions must be class scores of shape (examples, classes), got shape {scores.shape}.")
        num_classes = scores.shape[1]
        if ((references < 0) | (references >= num_classes)).any():
            raise ValueError(f"references must be class ids in [0, {num_classes}), got {sorted(set(references.tolist()))}.")
        ks = [top_k] if isinstance(top_k, int) else list(top_k)
        if any(not 1 <= k for k in ks):
            raise ValueError(f"top_k must be positive, got {top_k}.")
        # rank of the reference = number of classes scored strictly higher (ties count for the reference)
        reference_scores = scores[np.arange(len(scores)), references]
        rank = (scores > reference_scores[:, None]).sum(axis=1)
        results = {"accuracy": float((scores.argmax(axis=1) == references).mean())}
        for k in ks:
            results[f"top{k}_accuracy"] = float((rank < k).mean())
        return results
