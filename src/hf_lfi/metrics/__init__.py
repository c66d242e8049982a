"""`evaluate` modules shipped with the package, loadable without the Hub: `hf_lfi.metrics.load("accuracy_topk")`."""

from pathlib import Path

import evaluate

METRICS_DIR = Path(__file__).parent
METRIC_NAMES = ("accuracy_topk", "coco_map", "interaction_alignment")


def load(name: str, **kwargs) -> evaluate.EvaluationModule:
    """`evaluate.load` of one of the shipped modules (`METRIC_NAMES`) by its path; works offline."""
    if name not in METRIC_NAMES:
        raise ValueError(f"Unknown hf_lfi metric {name!r}; available: {METRIC_NAMES}.")
    return evaluate.load(str(METRICS_DIR / name), **kwargs)


__all__ = ["METRICS_DIR", "METRIC_NAMES", "load"]
