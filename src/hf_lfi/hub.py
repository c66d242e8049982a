"""Publishing helpers: interaction datasets with their dataset card (architecture.md decision 7)."""

import json
import os
from collections import Counter
from pathlib import Path

from datasets import Dataset, DatasetDict
from huggingface_hub import DatasetCard, DatasetCardData

CARD_TEMPLATES = Path(__file__).parent / "hub_cards"
_PROVENANCE_COLUMNS = {
    "interaction_prompt": "the prompt's registry name",
    "interaction_answer": "the teacher's answer",
    "interaction_foreground": "the parsed foreground (object) words",
    "interaction_background": "the parsed background words",
}


def _splits(dataset: Dataset | DatasetDict) -> dict[str, Dataset]:
    return dict(dataset) if isinstance(dataset, DatasetDict) else {"train": dataset}


def interaction_dataset_card(
    dataset: Dataset | DatasetDict, repo_id: str = "your-org/your-dataset", provenance: dict | None = None
) -> DatasetCard:
    """A `DatasetCard` describing the teacher (from the `interaction_teacher` column unless `provenance` is given),
    the map grid and the status counts."""
    splits = _splits(dataset)
    missing = [name for name, split in splits.items() if "interaction_map" not in split.column_names]
    if missing:
        raise ValueError(f"Splits {missing} have no 'interaction_map' column: this is not an interaction dataset.")
    if provenance is None:
        recorded = {text for split in splits.values() if "interaction_teacher" in split.column_names for text in split.unique("interaction_teacher")}
        if len(recorded) != 1:
            raise ValueError(
                f"Cannot tell the teacher: {len(recorded)} different 'interaction_teacher' values; pass provenance=."
            )
        provenance = json.loads(recorded.pop())
    counts = Counter()
    grid = None
    for split in splits.values():
        if "interaction_status" in split.column_names:
            counts.update(split["interaction_status"])
        if grid is None and len(split):
            first = split[0]["interaction_map"]
            grid = f"{len(first)} x {len(first[0])}"
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
        grid=grid or "unknown",
        status_table="\n".join(f"| {status} | {count} |" for status, count in status_counts.items()) or "| (none) | 0 |",
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


__all__ = ["CARD_TEMPLATES", "interaction_dataset_card", "push_interaction_dataset", "save_interaction_dataset"]
