"""Publishing helpers: model cards and interaction datasets with their dataset card (architecture.md decision 7)."""

import json
import os
import re
from collections import Counter
from pathlib import Path

import pyarrow.compute as pc
from datasets import Dataset, DatasetDict
from huggingface_hub import DatasetCard, DatasetCardData, EvalResult, ModelCard, ModelCardData
from transformers.utils import logging

from .modeling.name_or_path import is_repo_id
from .presets import flop_report, parameter_report
from .students import CLASSIFICATION, TASKS, student_of, task_of_model

CARD_TEMPLATES = Path(__file__).parent / "hub_cards"
_PROVENANCE_COLUMNS = {
    "interaction_prompt": "the prompt's registry name",
    "interaction_answer": "the teacher's answer",
    "interaction_foreground": "the parsed foreground (object) words",
    "interaction_background": "the parsed background words",
}

logger = logging.get_logger(__name__)


def _splits(dataset: Dataset | DatasetDict) -> dict[str, Dataset]:
    return dict(dataset) if isinstance(dataset, DatasetDict) else {"train": dataset}


def _map_grids(splits: dict[str, Dataset]) -> Counter:
    """(rows, cols) -> number of maps, over every split, read from the map column's list lengths (no map decoded)."""
    grids = Counter()
    for split in splits.values():
        for batch in split.select_columns(["interaction_map"]).with_format("arrow").iter(batch_size=10_000):
            maps = batch.column("interaction_map")
            rows = pc.list_value_length(maps).to_pylist()
            cols = pc.list_value_length(pc.list_element(maps, 0)).to_pylist()
            grids.update(zip(rows, cols))
    return grids


def interaction_dataset_card(
    dataset: Dataset | DatasetDict, repo_id: str = "your-org/your-dataset", provenance: dict | None = None
) -> DatasetCard:
    """A `DatasetCard` describing the teacher (from the `interaction_teacher` column unless `provenance` is given),
    the map grid (the grids, most rows first, when a Qwen-style teacher gave each image its own) and the status
    counts."""
    splits = _splits(dataset)
    missing = [name for name, split in splits.items() if "interaction_map" not in split.column_names]
    if missing:
        raise ValueError(f"Splits {missing} have no 'interaction_map' column: this is not an interaction dataset.")
    if provenance is None:
        recorded = {
            text
            for split in splits.values()
            if "interaction_teacher" in split.column_names
            for text in split.unique("interaction_teacher")
        }
        if len(recorded) != 1:
            raise ValueError(
                f"Cannot tell the teacher: {len(recorded)} different 'interaction_teacher' values; pass provenance=."
            )
        provenance = json.loads(recorded.pop())
    counts = Counter()
    for split in splits.values():
        if "interaction_status" in split.column_names:
            counts.update(split["interaction_status"])
    grids = [(f"{rows} x {cols}", n) for (rows, cols), n in _map_grids(splits).most_common()]
    more = f", ... ({len(grids)} grids)" if len(grids) > 5 else ""
    grid = ", ".join(name for name, _ in grids[:5]) + more or None
    if len(grids) > 1:
        grid_text = "on a grid per image (" + ", ".join(f"{name}: {n} rows" for name, n in grids[:5]) + more + ")"
    else:
        grid_text = f"on a {grid or 'unknown'} grid"
    status_counts = dict(sorted(counts.items()))
    card_data = DatasetCardData(
        pretty_name=f"{Path(repo_id).name} (LFI interaction maps)",
        tags=["hf_lfi", "lfi", "interaction-maps", "image-classification"],
        task_categories=["image-classification"],
        size_categories=None,
        hf_lfi={**provenance, "grid": grid, "status_counts": status_counts},
    )
    present = {c for split in splits.values() for c in split.column_names}
    return DatasetCard.from_template(
        card_data,
        template_path=str(CARD_TEMPLATES / "interaction_dataset_card.md"),
        repo_id=repo_id,
        grid_text=grid_text,
        status_table="\n".join(f"| {status} | {count} |" for status, count in status_counts.items())
        or "| (none) | 0 |",
        provenance_columns="".join(f"- `{c}`: {text}.\n" for c, text in _PROVENANCE_COLUMNS.items() if c in present),
        provenance=provenance,
    )


def save_interaction_dataset(
    dataset: Dataset | DatasetDict, path: str | os.PathLike, provenance: dict | None = None
) -> DatasetCard:
    """`save_to_disk` plus the dataset card as `README.md` in the same folder (reload with `load_from_disk`)."""
    card = interaction_dataset_card(dataset, Path(path).name, provenance)
    dataset.save_to_disk(str(path))
    card.save(Path(path) / "README.md")
    return card


def push_interaction_dataset(
    dataset: Dataset | DatasetDict, repo_id: str, provenance: dict | None = None, **push_kwargs
) -> DatasetCard:
    """`push_to_hub` of the images + maps, then the dataset card (teacher, prompt, aggregation, grid, statuses)."""
    card = interaction_dataset_card(dataset, repo_id, provenance)
    dataset.push_to_hub(repo_id, **push_kwargs)
    card.push_to_hub(repo_id, repo_type="dataset", token=push_kwargs.get("token"))
    return card


def split_metrics(
    results: dict, metric_names: str = TASKS[CLASSIFICATION].card_metrics
) -> dict[str, dict[str, float]]:
    """{split: {metric: value}} from flat run metrics (`all_results.json`, log history: `{split}_{metric}`, the
    Trainer's `eval_` prefix read as the validation split), for the metrics matched by `metric_names` (a regular
    expression: a task's `card_metrics`)."""
    key_pattern = re.compile(rf"^(?P<split>.+?)_(?P<metric>{metric_names})$")
    table: dict[str, dict[str, float]] = {}
    for key, value in results.items():
        match = key_pattern.match(key)
        if match and isinstance(value, (int, float)) and not isinstance(value, bool):
            split = "validation" if match["split"] == "eval" else match["split"]
            table.setdefault(split, {})[match["metric"]] = float(value)
    return table


def _results_table(ours: dict, theirs: dict, source: str) -> str:
    if not ours:
        return "No evaluation results were recorded for this run."
    metrics = sorted({metric for values in ours.values() for metric in values}, key=lambda m: (len(m), m))
    header = "| split | " + " | ".join(metrics) + "".join(f" | {source} {m}" for m in metrics if theirs) + " |"
    lines = [header, "|" + "---|" * (1 + len(metrics) * (2 if theirs else 1))]
    for split, values in ours.items():
        row = [f"{values[m]:.4f}" if m in values else "" for m in metrics]
        if theirs:
            row += [f"{theirs.get(split, {})[m]:.4f}" if m in theirs.get(split, {}) else "" for m in metrics]
        lines.append(f"| {split} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def dataset_name(name: str | None) -> str | None:
    """How a card names a data set: a Hub id as it is; a local folder or a shipped data set by its own name."""
    if not name:
        return None
    return name if is_repo_id(name) else Path(name.removeprefix("hf_lfi:").rstrip("/\\")).name


def model_card(
    model,
    repo_id: str,
    results: dict | None = None,
    baseline_results: dict | None = None,
    dataset: str | None = None,
    interaction_dataset: str | None = None,
    teacher: dict | None = None,
    base_model: str | None = None,
    training: dict | None = None,
    figure: str | None = None,
    figure_caption: str | None = None,
) -> ModelCard:
    """The card of an I-model: architecture and overhead (parameters, FLOPs), teacher, training budget, results vs
    the baseline, the paper's numbers, usage and citation, with metadata (`library_name`, `base_model`, `datasets`,
    `pipeline_tag`, `tags`, and `model-index` from `results`). The task, its Auto class and pipeline tag come from the
    student registry (`hf_lfi.students`).

    Args:
        results, baseline_results: flat run metrics such as `all_results.json` (`{split}_accuracy`, `{split}_map`, ...).
        dataset, interaction_dataset: the task data and the teacher maps: Hub ids (listed in the metadata) or local
            folders (named by their folder name).
        teacher: what produced the maps (e.g. an interaction dataset's `interaction_teacher` settings).
        base_model: the checkpoint the model was converted from (default: `config._name_or_path`; "" for a model
            trained from scratch).
        training: the training budget and settings to list (e.g. steps, epochs, batch size).
        figure, figure_caption: an image uploaded with the card (its path in the repository, e.g. the teacher vs
            student maps of `hf_lfi.explore.card.write_card_figure`) and what it shows.
    """
    config = model.config
    student, task = student_of(config), task_of_model(type(model))
    params = parameter_report(config, type(model))
    try:
        flops = flop_report(config, model_class=type(model))
        flops_text = f"{flops['ivit_flops'] / 1e9:.2f} G vs {flops['vit_flops'] / 1e9:.2f} G for the {params['source']} (x{flops['ratio']:.3f})"
    except Exception as error:  # the card is still written; the log says why the count is missing
        logger.warning(
            f"The model card's FLOPs are not measured: flop_report failed ({type(error).__name__}: {error})."
        )
        flops_text = f"not measured ({type(error).__name__})"
    source = (config._name_or_path if base_model is None else base_model) or None
    data_name = dataset_name(dataset)
    ours = split_metrics(results or {}, task.card_metrics)
    eval_results = (
        [
            EvalResult(
                task_type=task.pipeline_tag,
                dataset_type=data_name,
                dataset_name=data_name,
                dataset_split=split,
                metric_type=metric,
                metric_name=metric,
                metric_value=value,
            )
            for split, values in ours.items()
            for metric, value in values.items()
        ]
        if data_name
        else []
    )
    card_data = ModelCardData(
        library_name="transformers",
        base_model=source if is_repo_id(source) else None,
        datasets=[name for name in (dataset, interaction_dataset) if is_repo_id(name)] or None,
        pipeline_tag=task.pipeline_tag,
        tags=["hf_lfi", "lfi", "interaction-learning", config.model_type, task.pipeline_tag],
        model_name=repo_id,
        eval_results=eval_results or None,
    )
    gate = f"{'linear' if config.gate_hidden_size == 0 else f'hidden {config.gate_hidden_size}'} gate per {config.gate_granularity}"
    teacher_rows = dict(teacher or {})
    if interaction_dataset:
        teacher_rows = {"interaction dataset": dataset_name(interaction_dataset), **teacher_rows}
    card = ModelCard.from_template(
        card_data,
        template_path=str(CARD_TEMPLATES / "model_card.md"),
        model_name=repo_id.split("/")[-1],
        repo_id=repo_id,
        architecture=type(model).__name__,
        base_model=source,
        dataset=data_name,
        interaction_layers=", ".join(map(str, config.interaction_layer_indices)),
        gate=f"{gate}, initial bias {config.gate_init_bias}",
        freeze_backbone=config.freeze_backbone,
        parameters=f"{params['ivit_parameters'] / 1e6:.2f} M vs {params['vit_parameters'] / 1e6:.2f} M for the "
        f"{params['source']} (+{100 * params['overhead'] / params['vit_parameters']:.1f} %)",
        flops=flops_text,
        source=params["source"],
        auto_class=task.auto_class,
        pipeline_tag=task.pipeline_tag,
        teacher=teacher_rows or {"teacher": "not recorded"},
        training=training or {},
        has_baseline=bool(baseline_results),
        results_table=_results_table(ours, split_metrics(baseline_results or {}, task.card_metrics), params["source"]),
        paper_results=student.paper_results.get(task.name),
        figure=figure,
        figure_caption=figure_caption or "",
    )
    return card


__all__ = [
    "CARD_TEMPLATES",
    "interaction_dataset_card",
    "model_card",
    "push_interaction_dataset",
    "save_interaction_dataset",
    "dataset_name",
    "is_repo_id",
    "split_metrics",
]
