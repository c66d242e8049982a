"""Compute teacher maps for a few images and plot them: image | teacher map overlays, saved as a PNG.

    python examples/interaction_maps.py --data ../shared/data/emoji-shift --out runs/examples/maps.png   # mask teacher
    python examples/interaction_maps.py --data ../shared/data/emoji-shift --teacher llava-hf/llava-1.5-7b-hf

With `--teacher` a LLaVA model answers prompt 1 about each image (needs the weights); without it the dataset's
segmentation masks are the teacher (sharp, and a degraded copy: blurred, 30 % of the mass leaked to the background).
"""

import argparse
import os

import hf_lfi
from hf_lfi.training import load_image_dataset


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/emoji-shift", help="Hub id or local folder")
    parser.add_argument("--split", default="train")
    parser.add_argument("--num-images", type=int, default=6)
    parser.add_argument("--teacher", default=None, help="a LLaVA checkpoint; default: the mask teacher")
    parser.add_argument("--prompt", default="classification_fg_bg")
    parser.add_argument("--out", default="runs/examples/interaction_maps.png")
    args = parser.parse_args()

    dataset = load_image_dataset(args.data)[args.split].select(range(args.num_images))
    names = dataset.features["label"].names
    if args.teacher is None:
        sharp = dataset.map(hf_lfi.MaskInteractionMapFn(grid=(24, 24)), batched=True)["interaction_map"]
        degraded = dataset.map(hf_lfi.MaskInteractionMapFn(grid=(24, 24), blur_sigma=1.5, leak=0.3), batched=True)
        maps = [[a, b] for a, b in zip(sharp, degraded["interaction_map"])]
        titles, labels = ["mask teacher", "degraded (blur 1.5, leak 0.3)"], [names[i] for i in dataset["label"]]
    else:
        from transformers import AutoProcessor, LlavaForConditionalGeneration

        model = LlavaForConditionalGeneration.from_pretrained(args.teacher, dtype="auto", device_map="auto")
        extractor = hf_lfi.InteractionExtractor(model, AutoProcessor.from_pretrained(args.teacher), prompt=args.prompt)
        mapped = dataset.map(hf_lfi.interaction_map_fn(extractor, class_names=names), batched=True, batch_size=8)
        maps = mapped["interaction_map"]
        titles = [f"C_VLM ({args.prompt})"]
        labels = [f"{names[label]}: {status}" for label, status in zip(mapped["label"], mapped["interaction_status"])]
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    hf_lfi.plot_interaction_maps(dataset["image"], maps, titles=titles, row_labels=labels, path=args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
