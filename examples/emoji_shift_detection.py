"""Write ../shared/data/emoji-shift as a COCO-format detection dataset (one object per image) for training/run.py.

    python examples/emoji_shift_detection.py --data ../shared/data/emoji-shift --out data/emoji-shift-detection
    python training/run.py --config training/configs/idetr_emoji_shift.yaml

Each row keeps `image` and `mask` (the mask teacher's input) and gains `objects` = {`bbox`: [COCO x, y, w, h],
`category`: [class id]} with the dataset's class names as the category ClassLabel.
"""

import argparse

from datasets import ClassLabel, DatasetDict, Features, List, Value

from hf_lfi.training import load_image_dataset


def to_detection(dataset):
    names = dataset.features["label"].names
    features = Features({
        "image": dataset.features["image"], "mask": dataset.features["mask"],
        "objects": {"bbox": List(List(Value("float32"), length=4)), "category": List(ClassLabel(names=names))},
    })  # fmt: skip
    return dataset.map(
        lambda row: {"objects": {"bbox": [row["bbox"]], "category": [row["label"]]}},
        remove_columns=[c for c in dataset.column_names if c not in ("image", "mask")],
        features=features,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/emoji-shift")
    parser.add_argument("--out", default="data/emoji-shift-detection")
    args = parser.parse_args()
    DatasetDict({split: to_detection(ds) for split, ds in load_image_dataset(args.data).items()}).save_to_disk(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
