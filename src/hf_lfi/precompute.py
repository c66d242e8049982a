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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-lfi precompute", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--teacher", required=True, help="an AutoModelForImageTextToText repo id or folder")
    parser.add_argument("--revision", help="the teacher's revision (branch, tag or commit)")
    parser.add_argument("--dtype", default="auto", help="the teacher's dtype: auto, bfloat16, float16, float32")
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
    parser.add_argument("--layers", help="comma-separated text-layer indices to average (default: all)")
    parser.add_argument("--head-reduction", default="mean", choices=["mean", "max"])
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--shard-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    return parser


def _load_split(args):
    """The split `--split` of `--dataset` (a Hub id or a local path), through the loader training uses."""
    from .training.data import load_image_dataset

    splits = load_image_dataset(args.dataset, args.dataset_config)
    if args.split not in splits:
        raise SystemExit(f"hf-lfi precompute: no split {args.split!r} in {args.dataset} (splits: {list(splits)}).")
    return splits[args.split]


def _class_names(args, dataset) -> list[str] | None:
    if args.class_names:
        return [name.strip() for name in args.class_names.split(",")]
    feature = dataset.features.get(args.label_column)
    names = getattr(feature, "names", None)
    if names is None:
        raise SystemExit(
            f"hf-lfi precompute: the dataset has no ClassLabel column {args.label_column!r} to name the classes "
            f"(columns: {dataset.column_names}); pass --class-names or --label-column."
        )
    return list(names)


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
    dataset = _load_split(args)
    prompt = get_prompt(args.prompt)
    dtype = args.dtype if args.dtype == "auto" else getattr(torch, args.dtype)
    teacher = resolve_name_or_path(args.teacher, revision=args.revision)
    model = AutoModelForImageTextToText.from_pretrained(
        teacher, revision=args.revision, dtype=dtype, device_map={"": state.device}
    )
    processor = AutoProcessor.from_pretrained(teacher, revision=args.revision)
    layers = [int(layer) for layer in args.layers.split(",")] if args.layers else None
    extractor = InteractionExtractor(
        model.eval(),
        processor,
        prompt,
        layers=layers,
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
        if state.is_main_process:
            print(f"hf-lfi precompute: {final} is complete already (load it with datasets.load_from_disk).")
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
        print(f"hf-lfi precompute: {len(load_from_disk(str(final)))} rows with interaction maps in {final}")
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
