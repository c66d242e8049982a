"""Build the demo data set shipped with the package (`hf_lfi:emoji-shift-demo`): the first rows of every split of
emoji-shift (../shared/data/emoji-shift, built by ../shared/data/build_emoji_shift.py), same columns and features.

    python scripts/build_emoji_shift_demo.py            # writes src/hf_lfi/demo_data/emoji-shift-demo/*.parquet

Deterministic: the same source gives byte-identical files. The licences of what the rows contain are in the
folder's README.md.
"""

import argparse
from pathlib import Path

from datasets import Dataset

ROOT = Path(__file__).resolve().parents[1]
ROWS = {"train": 256, "validation": 64, "test_iid": 64, "test_shifted": 64}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default=str(ROOT.parent / "shared" / "data" / "emoji-shift"))
    parser.add_argument("--out", default=str(ROOT / "src" / "hf_lfi" / "demo_data" / "emoji-shift-demo"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for split, rows in ROWS.items():
        dataset = Dataset.from_parquet(str(Path(args.source) / f"{split}.parquet"))
        dataset.select(range(rows)).to_parquet(str(out / f"{split}.parquet"))
        size = (out / f"{split}.parquet").stat().st_size
        print(f"{split}: {rows} of {len(dataset)} rows, {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
