"""Build `emoji-pretrain`: the larger, other data a backbone is pretrained on before the paper's protocol (pretrained
ViT -> converted I-ViT trained on the target with its backbone frozen; the paper: ImageNet -> TinyImageNet).

What it holds, and why it shares no image with any target split:
- Objects: Twemoji artwork (CC-BY 4.0, npm package `emoji-datasource-twitter`), not the Noto artwork the emoji
  datasets of `../shared/data` paste, with every skin-tone variant as an object of its own. Every emoji whose short
  name appears in a test split (`test*`) of a target dataset given by `--exclude-objects-of` is left out with its
  variants, so the target's "unseen emoji" stay unseen by the backbone. The target's training emoji may appear in
  another artwork, as TinyImageNet's classes are ImageNet classes.
- Labels: the emoji's Unicode *subcategory* (about 90 classes; each target class, a Unicode category, is a union of
  them), drawn uniformly per image.
- Backgrounds: procedural textures (multi-scale value noise and stripes in random palettes) and random crops of the
  photos matplotlib ships (`grace_hopper.jpg`); a target's photo never appears. No background cue: backgrounds are
  drawn independently of the label.
- Same columns as the emoji datasets (`image`, `mask`, `label`, `bbox`, `object`, `background`), 64 x 64 px, objects
  28-48 px, splits `train` (`--train-size`, default 20,000) and `validation` (`--validation-size`, 1,000); deterministic for a seed.

    npm pack emoji-datasource-twitter@16.0.0 && tar xzf emoji-datasource-twitter-16.0.0.tgz   # -> package/
    python benchmarks/build_pretraining_set.py --emoji-root package --out data/emoji-pretrain \\
        --exclude-objects-of ../shared/data/emoji-shift ../shared/data/emoji-noshortcut

`excluded_objects.json` in `--out` lists the names left out, so a study can check that a pretraining set fits its
targets.
"""

import argparse
import io
import json
import time
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image

ARTWORK = "twitter"


def target_test_objects(datasets: list[str]) -> set[str]:
    """Short names of the objects in every `test*` split of the target datasets (parquet folders)."""
    import pyarrow.parquet as pq

    names = set()
    for folder in map(Path, datasets):
        files = sorted(folder.glob("test*.parquet"))
        if not files:
            raise ValueError(f"{folder} has no test*.parquet split to exclude objects from.")
        for path in files:
            names.update(pq.read_table(path, columns=["object"]).column("object").to_pylist())
    return names


def emoji_pool(root: Path, excluded: set[str]) -> tuple[list[tuple[Path, str, str]], list[str]]:
    """(artwork path, subcategory, short name) of every kept emoji and skin-tone variant, and the class names."""
    meta = json.loads((root / "emoji.json").read_text())
    items = []
    for emoji in meta:
        if emoji["category"] == "Component" or emoji["short_name"] in excluded:
            continue
        variants = [(emoji["image"], emoji.get(f"has_img_{ARTWORK}"), emoji["short_name"])]
        for tone, variant in emoji.get("skin_variations", {}).items():
            variants.append((variant["image"], variant.get(f"has_img_{ARTWORK}"), f"{emoji['short_name']}_{tone}"))
        for image, available, name in variants:
            path = root / "img" / ARTWORK / "64" / image
            if available and path.exists():
                items.append((path, emoji["subcategory"], name))
    if not items:
        raise ValueError(
            f"No {ARTWORK} artwork under {root}/img/{ARTWORK}/64: is --emoji-root the npm package folder?"
        )
    classes = sorted({subcategory for _, subcategory, _ in items})
    return sorted(items), classes


def value_noise(rng: np.random.Generator, size: int) -> np.ndarray:
    """Multi-scale value noise in [0, 1]: random grids of 4..64 cells upsampled bilinearly, summed by scale."""
    total = np.zeros((size, size))
    for cells, weight in ((4, 1.0), (8, 0.5), (16, 0.25), (64, 0.12)):
        grid = Image.fromarray((rng.random((cells, cells)) * 255).astype(np.uint8))
        total += weight * np.asarray(grid.resize((size, size), Image.BILINEAR)) / 255
    return (total - total.min()) / (np.ptp(total) + 1e-8)


def colourise(rng: np.random.Generator, values: np.ndarray) -> np.ndarray:
    """A [0, 1] field through a random palette of three colours."""
    palette = rng.integers(0, 256, size=(3, 3)).astype(np.float64)
    low = values[..., None] < 0.5
    t = np.where(low, values[..., None] * 2, values[..., None] * 2 - 1)
    colours = np.where(low, palette[0] + t * (palette[1] - palette[0]), palette[1] + t * (palette[2] - palette[1]))
    return colours.clip(0, 255).astype(np.uint8)


def backgrounds(rng: np.random.Generator, count: int, size: int = 256) -> list[tuple[str, np.ndarray]]:
    """`count` procedural textures (noise and stripes) plus matplotlib's sample photo."""
    out = []
    for number in range(count):
        if number % 2 == 0:
            out.append((f"noise-{number}", colourise(rng, value_noise(rng, size))))
        else:
            angle, frequency = rng.uniform(0, np.pi), rng.uniform(0.05, 0.4)
            y, x = np.mgrid[:size, :size]
            stripes = 0.5 + 0.5 * np.sin(frequency * (x * np.cos(angle) + y * np.sin(angle)))
            out.append((f"stripes-{number}", colourise(rng, 0.7 * stripes + 0.3 * value_noise(rng, size))))
    photo = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if photo.exists():
        out.append(("grace_hopper", np.asarray(Image.open(photo).convert("RGB"))))
    return out


def png(array: np.ndarray) -> dict:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def render(item, label: int, background, rng: np.random.Generator, size: int, scale: tuple[int, int]) -> dict:
    """The object pasted with its alpha mask at a random place and size on a random crop of the background."""
    path, _, name = item
    obj = Image.open(path).convert("RGBA")
    side = int(rng.integers(*scale))
    obj = obj.resize((side, side), Image.BILINEAR)
    background_name, photo = background
    row, col = rng.integers(0, photo.shape[0] - size), rng.integers(0, photo.shape[1] - size)
    canvas = Image.fromarray(photo[row : row + size, col : col + size]).convert("RGBA")
    x0, y0 = (int(v) for v in rng.integers(0, size - side + 1, size=2))
    canvas.alpha_composite(obj, (x0, y0))
    mask = np.zeros((size, size), np.uint8)
    mask[y0 : y0 + side, x0 : x0 + side] = (np.asarray(obj)[..., 3] > 127).astype(np.uint8) * 255
    ys, xs = np.nonzero(mask)
    return {
        "image": png(np.asarray(canvas.convert("RGB"))),
        "mask": png(mask),
        "label": label,
        "bbox": [float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()), float(ys.max() + 1 - ys.min())],
        "object": name,
        "background": background_name,
    }


def build(
    root: Path, out: Path, exclude_objects_of: list[str], train_size: int, validation_size: int, seed: int
) -> None:
    from datasets import ClassLabel, Dataset, Features, Sequence, Value
    from datasets import Image as ImageFeature

    excluded = target_test_objects(exclude_objects_of) if exclude_objects_of else set()
    pool, classes = emoji_pool(root, excluded)
    rng = np.random.default_rng(seed)
    textures = backgrounds(rng, 48)
    by_class = [[item for item in pool if item[1] == name] for name in classes]
    features = Features(
        {
            "image": ImageFeature(),
            "mask": ImageFeature(),
            "label": ClassLabel(names=classes),
            "bbox": Sequence(Value("float32"), length=4),
            "object": Value("string"),
            "background": Value("string"),
        }
    )
    out.mkdir(parents=True, exist_ok=True)
    print(f"{len(pool)} objects in {len(classes)} subcategories; {len(excluded)} target test objects left out")
    for split, count in {"train": train_size, "validation": validation_size}.items():
        start, rows = time.time(), []
        for number in range(count):
            label = int(rng.integers(len(classes)))
            item = by_class[label][rng.integers(len(by_class[label]))]
            rows.append(render(item, label, textures[rng.integers(len(textures))], rng, 64, (28, 49)))
            if (number + 1) % 5000 == 0:
                rate = (number + 1) / (time.time() - start)
                print(
                    f"{split}: {number + 1}/{count} rows, {rate:.0f} rows/s, ETA {(count - number - 1) / rate:.0f} s"
                )
        Dataset.from_list(rows, features=features).to_parquet(str(out / f"{split}.parquet"))
        print(f"{split}: {count} rows")
    (out / "excluded_objects.json").write_text(json.dumps(sorted(excluded)))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--emoji-root", required=True, help="the unpacked npm package emoji-datasource-twitter")
    parser.add_argument("--out", required=True)
    parser.add_argument(
        "--exclude-objects-of", nargs="*", default=[], help="target dataset folders whose test objects are left out"
    )
    parser.add_argument("--train-size", type=int, default=20000)
    parser.add_argument("--validation-size", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    build(
        Path(args.emoji_root),
        Path(args.out),
        args.exclude_objects_of,
        args.train_size,
        args.validation_size,
        args.seed,
    )


if __name__ == "__main__":
    main()
