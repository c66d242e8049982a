"""The check every batch-level callable makes (map functions, transforms): the columns it reads are there."""


def require_columns(batch: dict, *columns: str | None) -> None:
    """Raise a ValueError naming the first of `columns` (None entries skipped) missing from a batch."""
    for column in columns:
        if column is not None and column not in batch:
            raise ValueError(f"The dataset has no column {column!r} (columns: {sorted(batch)}).")


__all__ = ["require_columns"]
