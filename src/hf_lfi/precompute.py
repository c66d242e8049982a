"""Precompute a dataset's teacher interaction maps, on one device or many (`accelerate launch`).

    accelerate launch --num_processes 8 -m hf_lfi.precompute --teacher llava-hf/llava-1.5-7b-hf \\
        --dataset zh-plus/tiny-imagenet --split train --out maps/tiny-imagenet      # or `hf-lfi precompute ...`

Every process loads the teacher on its own device and maps its share of the shards (`precompute_interactions`:
atomic shard writes, finished shards skipped on a rerun, a progress bar with rows/s and ETA per process). When
all are done the main process assembles the interaction dataset with its card into `OUT/dataset` (reload with
`datasets.load_from_disk`) and removes the shards; a rerun after that only says where the dataset is (or refuses
other settings: another teacher, other weights, another prompt).
"""

import argparse
import shutil
import sys
from pathlib import Path

from .modeling.name_or_path import NameOrPathError, resolve_name_or_path

DATASET_DIR = "dataset"
DTYPES = ("auto", "bfloat16", "float16", "float32")


def _positive_int(text: str) -> int:
    if not text.strip().lstrip("+").isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return int(text)


def _layer_list(text: str) -> list[int]:
    try:
        return [int(layer) for layer in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be comma-separated text-layer indices, e.g. 0,1,2 (got {text!r})"
        ) from None


def _fail(message: str):
    """A one-line error for what the user gave (not a traceback), exit status 1."""
    raise SystemExit(f"hf-lfi precompute: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-lfi precompute", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--teacher", required=True, help="an AutoModelForImageTextToText repo id or folder")
    parser.add_argument("--revision", help="the teacher's revision (branch, tag or commit)")
    parser.add_argument("--dtype", default="auto", choices=DTYPES, help="the teacher's dtype")
    parser.add_argument(
        "--dataset",
        required=True,
        help="a Hub dataset id or a local folder (save_to_disk, parquet files per split, ...)",
    )
    parser.add_argument("--dataset-config", help="the Hub dataset's configuration name")
    parser.add_argument("--split", default="train", help="the split to map")
    parser.add_argument("--out", required=True, help="output folder: shards, then OUT/dataset with its README.md")
    parser.add_argument("--prompt", default="classification_fg_bg", help="a registered prompt name (hf_lfi PROMPTS)")
    parser.add_argument("--image-column", default="image")
    parser.add_argument(
        "--label-column", default="label", help="ClassLabel column whose names fill the prompt's class list"
    )
    parser.add_argument("--class-names", help="comma-separated class names (default: the label column's names)")
    parser.add_argument("--objects-column", default="objects", help="detection prompts: COCO-style objects column")
    parser.add_argument(
        "--layers", type=_layer_list, help="comma-separated text-layer indices to average (default: all)"
    )
    parser.add_argument("--head-reduction", default="mean", choices=["mean", "max"])
    parser.add_argument("--max-new-tokens", type=_positive_int, default=64)
    parser.add_argument("--shard-size", type=_positive_int, default=256)
    parser.add_argument("--batch-size", type=_positive_int, default=16)
    return parser


def _load_split(args):
    """The split `--split` of `--dataset` (a Hub id or a local path), through the loader training uses."""
    from .training.data import load_image_dataset

    splits = load_image_dataset(args.dataset, args.dataset_config)
    if args.split not in splits:
        _fail(f"no split {args.split!r} in {args.dataset} (splits: {list(splits)}).")
    return splits[args.split]


def _class_names(args, dataset) -> list[str] | None:
    if args.class_names:
        return [name.strip() for name in args.class_names.split(",")]
    feature = dataset.features.get(args.label_column)
    names = getattr(feature, "names", None)
    if names is None:
        _fail(
            f"the dataset has no ClassLabel column {args.label_column!r} to name the classes "
            f"(columns: {dataset.column_names}); pass --class-names or --label-column."
        )
    return list(names)


def _check_dataset(args, dataset, prompt) -> None:
    """What the map needs, checked before the teacher is loaded: rows, the image column, for detection prompts a
    COCO-style objects column; and no --class-names for a prompt without a class list (they would be ignored)."""
    if args.class_names and not prompt.needs_class_list:
        _fail(f"--class-names fills the class list of a prompt that has one; {prompt.name!r} has none.")
    if len(dataset) == 0:
        _fail(f"the dataset {args.dataset} (split {args.split!r}) has no rows.")
    columns = dataset.column_names
    if args.image_column not in columns:
        _fail(f"the dataset has no image column {args.image_column!r} (columns: {columns}); pass --image-column.")
    if prompt.task == "detection":
        objects = dataset.features.get(args.objects_column)
        inner = getattr(objects, "feature", objects)  # a Sequence/List of dicts or a dict of lists
        keys = set(inner) if isinstance(inner, dict) else set()
        if objects is None or not {"bbox", "category"} <= keys:
            found = f"columns: {columns}" if objects is None else f"its fields: {sorted(keys)}"
            _fail(
                f"the detection prompt {prompt.name!r} asks about each object of an image: the dataset needs a "
                f"COCO-style objects column {args.objects_column!r} with 'bbox' and 'category' ({found}); pass "
                "--objects-column, or a classification prompt."
            )


def summary(dataset) -> tuple[str, str | None]:
    """A line with the valid rows and the statuses of an interaction dataset, and a warning when fewer than
    `MIN_VALID_MAP_SHARE` of its rows have a usable map (training refuses a dataset without any, and warns below)."""
    from collections import Counter

    from .training.data import MIN_VALID_MAP_SHARE

    valid = sum(dataset["interaction_valid"])
    statuses = Counter(dataset["interaction_status"]).most_common()
    share = valid / len(dataset)
    line = f"{valid} of {len(dataset)} rows ({share:.0%}) have a valid map; statuses: " + ", ".join(
        f"{status} {count}" for status, count in statuses
    )
    warning = None
    if valid == 0:
        warning = "no row has a valid map: training with the alignment loss refuses this dataset. Check the prompt."
    elif share < MIN_VALID_MAP_SHARE:
        warning = (
            f"only {share:.0%} of the rows have a valid map (below {MIN_VALID_MAP_SHARE:.0%}): training warns that "
            "most rows train without alignment. Check the prompt and the teacher's answers."
        )
    return line, warning


def run(args) -> Path:
    """Map `args.dataset` with the teacher and save the interaction dataset; returns its folder."""
    import torch
    from datasets import load_from_disk
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from .hub import interaction_dataset_card
    from .interactions import InteractionExtractor, get_prompt, interaction_map_fn, precompute_interactions
    from .interactions.mapping import check_manifest, precompute_manifest, process_state

    state = process_state()
    out = Path(args.out)
    final = out / DATASET_DIR
    if out.exists() and not out.is_dir():
        _fail(f"--out {out} is a file; give a folder (new, or the one of a run to resume).")
    dataset = _load_split(args)
    try:
        prompt = get_prompt(args.prompt)
    except ValueError as error:
        _fail(str(error))
    _check_dataset(args, dataset, prompt)
    dtype = args.dtype if args.dtype == "auto" else getattr(torch, args.dtype)
    teacher = resolve_name_or_path(args.teacher, revision=args.revision)
    model = AutoModelForImageTextToText.from_pretrained(
        teacher, revision=args.revision, dtype=dtype, device_map={"": state.device}
    )
    processor = AutoProcessor.from_pretrained(teacher, revision=args.revision)
    try:  # the teacher's settings and the class names, checked before the teacher runs
        extractor = InteractionExtractor(
            model.eval(),
            processor,
            prompt,
            layers=args.layers,
            head_reduction=args.head_reduction,
            max_new_tokens=args.max_new_tokens,
        )
        if prompt.task == "classification":
            names = _class_names(args, dataset) if prompt.needs_class_list else None
            map_fn = interaction_map_fn(extractor, class_names=names, image_column=args.image_column)
        else:
            category = dataset.features[args.objects_column]["category"]
            names = getattr(getattr(category, "feature", category), "names", None)
            map_fn = interaction_map_fn(
                extractor, category_names=names, image_column=args.image_column, objects_column=args.objects_column
            )
        if final.exists():  # finished before: with these very settings (teacher weights included), or refused
            check_manifest(out, precompute_manifest(dataset, map_fn, args.shard_size))
    except ValueError as error:
        _fail(str(error))
    if final.exists():
        if state.is_main_process:
            line, _ = summary(load_from_disk(str(final)))
            print(f"hf-lfi precompute: {final} is complete already (load it with datasets.load_from_disk); {line}.")
        return final
    result = precompute_interactions(dataset, map_fn, out, args.shard_size, args.batch_size)
    state.wait_for_everyone()  # every process has opened the shards before the main process removes them
    if state.is_main_process:  # assemble: dataset + card, renamed into place only once complete
        staging = out / f"{DATASET_DIR}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        card = interaction_dataset_card(result, out.name)
        result.save_to_disk(str(staging))
        card.save(staging / "README.md")
        staging.rename(final)
        shutil.rmtree(out / "shards")
        line, warning = summary(load_from_disk(str(final)))
        print(f"hf-lfi precompute: {final}: {line}.")
        if warning:
            print(f"hf-lfi precompute: warning: {warning}", file=sys.stderr)
    state.wait_for_everyone()
    return final


def main(argv: list[str] | None = None) -> int:
    try:
        run(build_parser().parse_args(argv))
    except NameOrPathError as error:  # a missing path, an unknown id, an unreachable or offline Hub: one line
        print(f"hf-lfi precompute: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
