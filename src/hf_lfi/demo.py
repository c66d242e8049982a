"""Data shipped with the package, named `hf_lfi:NAME` wherever a data set name is taken (`--dataset_name`,
`load_image_dataset`). The `hf_lfi:` prefix cannot be a Hub id (a Hub id has no colon) and is no path a user
writes, so these names never go to the Hub nor to the working directory."""

from pathlib import Path

PREFIX = "hf_lfi:"
DEMO_DIR = Path(__file__).parent / "demo_data"
DEMO_DATASET = f"{PREFIX}emoji-shift-demo"  # a few hundred 64 px emoji-shift rows with masks and boxes


def shipped_datasets() -> list[str]:
    """The names of the data sets shipped with the package."""
    return sorted(PREFIX + folder.name for folder in DEMO_DIR.iterdir() if folder.is_dir())


def is_shipped(name) -> bool:
    return isinstance(name, str) and name.startswith(PREFIX)


def shipped_dataset_path(name: str) -> str:
    """The folder of the shipped data set `name` (`hf_lfi:emoji-shift-demo`)."""
    folder = DEMO_DIR / name.removeprefix(PREFIX)
    if not name.startswith(PREFIX) or not folder.is_dir() or folder.name != name.removeprefix(PREFIX):
        raise ValueError(f"No data set {name!r} ships with hf_lfi (shipped: {', '.join(shipped_datasets())}).")
    return str(folder)


__all__ = ["DEMO_DATASET", "is_shipped", "shipped_dataset_path", "shipped_datasets"]
