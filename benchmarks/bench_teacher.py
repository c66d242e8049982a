"""Teacher-side cost on CPU: the answer-row capture vs a plain SDPA forward vs eager `output_attentions`.

A mid-size random LLaVA (CLIP tower at 336 px / patch 14 = 576 image tokens, a Llama text model with grouped-query
attention) reads prompt + answer for a batch of images. Each variant runs in its own spawned process:
  (a) plain SDPA forward over prompt + answer,
  (b) `InteractionExtractor.answer_attention` (tokenising the answers, the SDPA forward with the capturing
      attention, aggregation into per-word maps),
  (c) the same forward with eager attention and `output_attentions=True` (the naive way).
Reported: median/min time and the peak memory the call adds over the loaded model and inputs. Also maps/s of the
classification map function end to end (greedy generation of the answer included).

Then one row per VLM family (tests/tiny_vlms.py at `--family-size`, "mid" = a 6-layer, 512-wide text model):
end-to-end maps/s of the extractor (generate + parse + one capturing forward + maps) against plain
`model.generate` on the same batch (its preprocessing included) and the same number of new tokens, and the floor:
that generate plus one plain forward over prompt + answer.

    python benchmarks/bench_teacher.py [--text-layers 6] [--hidden 512] [--batch 4] [--repeats 5] [--families all]
"""

import argparse
import json
import multiprocessing as mp
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ANSWER = "{'foreground': {hippopotamus}, 'background': {grass, sky}}"


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _setup(args):
    sys.path.insert(0, str(ROOT / "tests"))
    import numpy as np
    import torch
    from PIL import Image
    from tiny_llava import tiny_llava

    from hf_lfi.interactions import InteractionExtractor

    torch.set_num_threads(args.threads)
    model, processor = tiny_llava(
        image_size=336,
        patch_size=14,
        text_hidden_size=args.hidden,
        text_layers=args.text_layers,
        text_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        vision_hidden_size=128,
    )
    extractor = InteractionExtractor(model, processor, max_new_tokens=args.new_tokens)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (336, 336, 3), dtype=np.uint8)) for _ in range(args.batch)]
    return torch, model, processor, extractor, images


def _variant(name, args, queue):
    torch, model, processor, extractor, images = _setup(args)
    classes = ["hippopotamus", "owl", "red"]
    inputs = extractor._inputs(images, [extractor.prompt.format(classes)] * len(images))
    answers = [ANSWER] * len(images)
    parsed = [extractor.prompt.parse(a) for a in answers]
    spans = [p.foreground_spans + p.background_spans for p in parsed]
    answer_ids = processor.tokenizer(answers, add_special_tokens=False, return_tensors="pt")
    full = {
        "input_ids": torch.cat([inputs["input_ids"], answer_ids["input_ids"]], 1),
        "attention_mask": torch.cat([inputs["attention_mask"], answer_ids["attention_mask"]], 1),
        "pixel_values": inputs["pixel_values"],
    }
    if name == "eager":
        model.set_attn_implementation("eager")

    def call():
        with torch.no_grad():
            if name == "sdpa":
                model(**full, use_cache=False, logits_to_keep=1)
            elif name == "capture":
                extractor.answer_attention(inputs, answers, spans)
            elif name == "eager":
                model(**full, use_cache=False, logits_to_keep=1, output_attentions=True)
            elif name == "map_fn":
                extractor(images, class_names=classes)

    before = _rss_mb()
    call()  # the first call also gives the peak memory it adds
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    queue.put(
        {
            "variant": name,
            "median_s": statistics.median(times),
            "min_s": min(times),
            "peak_extra_mb": peak,
            "sequence_length": int(full["input_ids"].shape[1]),
        }
    )


def _family(family, args, queue):
    sys.path.insert(0, str(ROOT / "tests"))
    import numpy as np
    import torch
    from PIL import Image
    from tiny_vlms import tiny_vlm

    from hf_lfi.interactions import InteractionExtractor

    torch.set_num_threads(args.threads)
    model, processor = tiny_vlm(family, size=args.family_size)
    model.generation_config.min_new_tokens = args.new_tokens  # both sides generate exactly --new-tokens tokens
    model.generation_config.suppress_tokens = [model.config.image_token_id]  # a random model may "answer" one
    extractor = InteractionExtractor(model, processor, max_new_tokens=args.new_tokens)
    rng = np.random.default_rng(0)
    sizes = [(64, 64), (64, 48), (48, 64), (56, 56)]
    images = [
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for w, h in (sizes * args.batch)[: args.batch]
    ]
    classes = ["hippopotamus", "owl", "red"]
    squares, _ = extractor._square_images(images)
    inputs = extractor._inputs(squares, [extractor.prompt.format(classes)] * len(images))

    def timed(call):
        call()
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    questions = [extractor.prompt.format(classes)] * len(images)

    def generate():  # what a plain user pays: preprocessing + greedy generation
        with torch.no_grad():
            return model.generate(
                **extractor._inputs(squares, questions), max_new_tokens=args.new_tokens, do_sample=False
            )

    answer = generate()[:, inputs["input_ids"].shape[1] :]
    full = extractor._full_inputs(inputs, answer, torch.ones_like(answer))

    def forward():  # one plain SDPA forward over prompt + answer: the floor's second part
        with torch.no_grad():
            model(**full, logits_to_keep=1)

    generate_s, forward_s = timed(generate), timed(forward)
    extractor_s = timed(lambda: extractor(images, class_names=classes))
    grids = extractor.layout.grids(inputs)
    queue.put(
        {
            "family": family,
            "generate_s": generate_s,
            "forward_s": forward_s,
            "extractor_s": extractor_s,
            "ratio": extractor_s / generate_s,
            "floor_ratio": (generate_s + forward_s) / generate_s,
            "maps_per_second": len(images) / extractor_s,
            "prompt_tokens": int(inputs["input_ids"].shape[1]),
            "grid": f"{grids[0].rows}x{grids[0].cols}",
        }
    )


def run(name, args, target=None):
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=target or _variant, args=(name, args, queue))
    process.start()
    process.join()
    if process.exitcode != 0:
        raise RuntimeError(
            f"The benchmark of {name!r} failed (exit code {process.exitcode}); see its traceback above."
        )
    return queue.get()


def _run_families(families, args) -> list[dict]:
    """One row per family, printed as soon as it is measured."""
    if not families:
        return []
    print(
        f"\nend to end, batch {args.batch}, {args.new_tokens} new tokens, {args.family_size} text models, {args.threads} threads"
    )
    print(
        f"{'family':<18}{'prompt tok':>11}{'grid':>7}{'generate s':>12}{'forward s':>11}{'extractor s':>13}"
        f"{'ratio':>7}{'floor':>7}{'maps/s':>8}",
        flush=True,
    )
    rows = []
    for family in families:
        r = run(family, args, _family)
        print(
            f"{r['family']:<18}{r['prompt_tokens']:>11}{r['grid']:>7}{r['generate_s']:>12.3f}{r['forward_s']:>11.3f}"
            f"{r['extractor_s']:>13.3f}{r['ratio']:>6.2f}x{r['floor_ratio']:>6.2f}x{r['maps_per_second']:>8.2f}",
            flush=True,
        )
        rows.append(r)
    print(
        "ratio = extractor / plain generate (preprocessing included) of the same batch; floor = (generate + one forward)"
        " / generate, what any extractor must pay; target ratio <= 1.3x"
    )
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--text-layers", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--kv-heads", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--families", default="all", help="comma-separated tests/tiny_vlms.py families, all, or none")
    parser.add_argument("--family-size", default="mid", choices=["tiny", "mid"])
    parser.add_argument("--families-only", action="store_true", help="skip the LLaVA capture/eager comparison")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_teacher.json"))
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_vlms import FAMILIES

    families = (
        [] if args.families == "none" else sorted(FAMILIES) if args.families == "all" else args.families.split(",")
    )

    if args.families_only:
        rows = _run_families(families, args)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"config": vars(args), "families": rows}, indent=2))
        return
    results = {name: run(name, args) for name in ("sdpa", "capture", "eager", "map_fn")}
    base, capture, eager = results["sdpa"], results["capture"], results["eager"]
    print(
        f"text {args.text_layers} layers x hidden {args.hidden} ({args.heads} q / {args.kv_heads} kv heads), "
        f"576 image tokens, batch {args.batch}, sequence {base['sequence_length']} tokens, {args.threads} threads"
    )
    print(f"{'variant':<34}{'median s':>10}{'min s':>10}{'vs sdpa':>9}{'peak +MB':>10}")
    labels = {"sdpa": "(a) SDPA forward", "capture": "(b) answer-row capture", "eager": "(c) eager output_attentions"}
    for name in ("sdpa", "capture", "eager"):
        r = results[name]
        print(
            f"{labels[name]:<34}{r['median_s']:>10.3f}{r['min_s']:>10.3f}{r['median_s'] / base['median_s']:>8.2f}x{r['peak_extra_mb']:>10.0f}"
        )
    maps_per_s = args.batch / results["map_fn"]["median_s"]
    print(f"map function end to end (generation of {args.new_tokens} tokens included): {maps_per_s:.2f} maps/s")
    summary = {
        "config": vars(args),
        "results": results,
        "capture_time_ratio": capture["median_s"] / base["median_s"],
        "eager_to_capture_memory_ratio": eager["peak_extra_mb"] / max(capture["peak_extra_mb"], 1e-9),
        "maps_per_second": maps_per_s,
    }
    print(
        f"capture/sdpa time {summary['capture_time_ratio']:.3f}x (target <= 1.15x); "
        f"eager/capture peak memory {summary['eager_to_capture_memory_ratio']:.1f}x (target >= 3x)"
    )
    summary["families"] = _run_families(families, args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
