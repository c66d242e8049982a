"""Write ../shared/data/emoji-shift as a COCO-format detection dataset (one object per image) into the folder --out.

    python examples/emoji_shift_detection.py --data ../shared/data/emoji-shift --out runs/examples/emoji-shift-detection

`hf-lfi train` does the same on the fly with `--bbox_column bbox` (`--config idetr_emoji_shift`); this
script keeps a copy on disk. Each row keeps its columns (`image`, `mask` for the mask teacher, ...) and gains
`objects` = {`bbox`: [COCO x, y, w, h], `category`: [class id]} with the dataset's class names as the category
ClassLabel.
"""

import argparse

from datasets import DatasetDict

from hf_lfi.training import load_image_dataset
from hf_lfi.training.detection import single_object_detection


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/emoji-shift")
    parser.add_argument("--out", default="runs/examples/emoji-shift-detection")
    args = parser.parse_args()
    splits = {split: single_object_detection(rows) for split, rows in load_image_dataset(args.data).items()}
    DatasetDict(splits).save_to_disk(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
