"""Teacher cost: the extractor against plain `generate` of the same batch, per VLM family, in the same process; and
`hf-lfi precompute` throughput with 1 and 2 processes.

The extractor records the answer rows at the decode steps of `generate` (no second forward pass), then parses the
answer and builds the maps; its target is <= 1.05x plain `generate` (median, batch 4, 24 new tokens).

For each family of tests/tiny_vlms.py and each size ("mid": a 6-layer, 512-wide text model in float32; "real": a
Qwen2-1.5B-shaped text model, 28 layers, 1536 wide, 12 query / 2 key-value heads of 128, random weights in
bfloat16, with LLaVA-1.5's 576 image tokens or Qwen2-VL's ~256), one spawned process builds the teacher and times, alternately (the order flips every repeat), (a) plain
`model.generate` of a batch of `--batch` images of mixed sizes, the processor call and the decoding of the answers
included, and (b) the extractor's maps of the same batch. Both emit the same forced answer of exactly `--new-tokens`
tokens (a valid answer followed by prose: the extractor parses it and computes maps). A progress line per
measurement; medians, their ratio (PASS/FAIL against the target), the median of the per-repeat ratios, the ratio of
the fastest runs and that of the median CPU times of the process. The machine may be shared: run it under `nice`,
and read them all.

Then `hf-lfi precompute` of `--precompute-rows` rows with the mid-size LLaVA (random answers of `--new-tokens`
tokens), with 1 process (`--cores` threads) and with 2 processes under `accelerate launch` (half as many each):
rows/s end to end (launch and teacher loading included) and of the mapping alone (the progress bars' rates, summed).

    nice -n 10 python benchmarks/bench_teacher.py [--families all] [--sizes mid,real] [--real-families llava,qwen2_vl]
"""

import argparse
import json
import multiprocessing as mp
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = 1.05
CLASSES = ["hippopotamus", "owl", "red"]
# a valid answer, then prose that the parser ignores, long enough to fill the new tokens
ANSWER = (
    "{'foreground': {hippopotamus}, 'background': {grass, sky}} The hippopotamus stands in the green grass under the "
    "blue sky and the grass is green and the sky is blue."
)


def _images(batch: int):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    sizes = [(64, 64), (64, 48), (48, 64), (56, 56)]
    return [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for w, h in (sizes * batch)[:batch]]


def _family(family: str, size: str, args, queue):
    sys.path.insert(0, str(ROOT / "tests"))
    import torch
    from tiny_vlms import forced_answers, tiny_vlm

    from hf_lfi.interactions import InteractionExtractor

    torch.set_num_threads(args.threads)
    model, processor = tiny_vlm(family, size=size)
    if size == "real":
        model = model.to(torch.bfloat16)
    extractor = InteractionExtractor(model, processor, max_new_tokens=args.new_tokens)
    answer_tokens = len(processor.tokenizer(ANSWER, add_special_tokens=False)["input_ids"])
    if answer_tokens < args.new_tokens:
        raise ValueError(f"The forced answer has {answer_tokens} tokens, fewer than --new-tokens {args.new_tokens}.")
    images = _images(args.batch)
    squares, _ = extractor._square_images(images)
    questions = [extractor.prompt.format(CLASSES)] * len(images)
    prompt_length = extractor._inputs(squares, questions)["input_ids"].shape[1]

    def generate():  # what a plain user pays: preprocessing, greedy generation, decoding
        with torch.no_grad():
            inputs = extractor._inputs(squares, questions)
            out = model.generate(**inputs, max_new_tokens=args.new_tokens, do_sample=False)
            processor.tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        return out.shape[1] - inputs["input_ids"].shape[1]

    def extract():
        results = extractor(images, class_names=CLASSES)
        if any(r.status != "ok" for r in results):
            raise RuntimeError(f"The extractor's maps failed: {[r.status for r in results]}")
        return results

    times = {"generate": [], "extractor": []}
    cpu_times = {"generate": [], "extractor": []}  # the process's CPU time: what the call computed, waits left out
    with forced_answers(model, processor.tokenizer, [ANSWER]):
        new_tokens = generate()
        extract()  # warm-up of both
        for repeat in range(args.repeats):
            calls = [("generate", generate), ("extractor", extract)]
            for name, call in calls if repeat % 2 == 0 else calls[::-1]:
                start, cpu_start = time.perf_counter(), time.process_time()
                call()
                times[name].append(time.perf_counter() - start)
                cpu_times[name].append(time.process_time() - cpu_start)
                print(
                    f"  {family:<16} {size:<5} repeat {repeat + 1}/{args.repeats}  {name:<9} {times[name][-1]:8.3f} s"
                    f"  (CPU {cpu_times[name][-1]:8.3f} s)",
                    flush=True,
                )
    grid = extractor.layout.grids(extractor._inputs(squares, questions))[0]
    generate_s, extractor_s = statistics.median(times["generate"]), statistics.median(times["extractor"])
    paired = statistics.median(e / g for e, g in zip(times["extractor"], times["generate"]))
    queue.put(
        {
            "family": family,
            "size": size,
            "dtype": str(model.dtype).removeprefix("torch."),
            "text_parameters_m": sum(p.numel() for p in model.get_decoder().parameters()) / 1e6,
            "prompt_tokens": int(prompt_length),
            "new_tokens": int(new_tokens),
            "grid": f"{grid.rows}x{grid.cols}",
            "generate_s": generate_s,
            "extractor_s": extractor_s,
            "ratio": extractor_s / generate_s,
            "paired_ratio": paired,
            "min_ratio": min(times["extractor"]) / min(times["generate"]),
            "cpu_ratio": statistics.median(cpu_times["extractor"]) / statistics.median(cpu_times["generate"]),
            "pass": extractor_s / generate_s <= TARGET,
            "times": times,
            "cpu_times": cpu_times,
        }
    )


def run_isolated(target, *arguments):
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=target, args=(*arguments, queue))
    process.start()
    process.join()
    if process.exitcode != 0:
        raise RuntimeError(f"The benchmark of {arguments[:2]} failed (exit code {process.exitcode}); see above.")
    return queue.get()


def _row(r: dict) -> str:
    verdict = "PASS" if r["pass"] else "FAIL"
    return (
        f"{r['family']:<16}{r['size']:<6}{r['dtype']:<9}{r['text_parameters_m']:>8.0f}{r['prompt_tokens']:>8}"
        f"{r['grid']:>7}{r['generate_s']:>11.3f}{r['extractor_s']:>12.3f}{r['ratio']:>7.3f}x{r['paired_ratio']:>8.3f}x"
        f"{r['min_ratio']:>7.3f}x{r['cpu_ratio']:>7.3f}x  {verdict}"
    )


HEADER = (
    f"{'family':<16}{'size':<6}{'dtype':<9}{'text M':>8}{'prompt':>8}{'grid':>7}{'generate s':>11}{'extractor s':>12}"
    f"{'ratio':>8}{'paired':>9}{'min':>8}{'CPU':>8}  target <= {TARGET}x"
)


def _rates(output: str) -> float:
    """The summed final rate (rows/s) of the precompute progress bars in `output`."""
    last = {}
    for process, value, unit in re.findall(r"process (\d+)/\d+: *\d+%.*?([\d.]+)(rows/s|s/rows)", output):
        last[process] = float(value) if unit == "rows/s" else 1 / float(value)
    return sum(last.values())


def _precompute(args) -> list[dict]:
    """`hf-lfi precompute` of a saved mid-size LLaVA and dataset, with 1 and 2 processes."""
    sys.path.insert(0, str(ROOT / "tests"))
    from synthetic import make_image_dataset
    from tiny_vlms import tiny_vlm

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        model, processor = tiny_vlm("llava", size="mid")
        model.save_pretrained(root / "teacher")
        processor.save_pretrained(root / "teacher")
        make_image_dataset(args.precompute_rows).save_to_disk(str(root / "data"))
        common = [
            *("--teacher", str(root / "teacher"), "--dataset", str(root / "data"), "--dtype", "float32"),
            *("--max-new-tokens", str(args.new_tokens), "--batch-size", str(args.batch), "--shard-size", "8"),
        ]
        for processes in (1, 2):
            threads = max(1, args.cores // processes)
            env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT / "src")}
            launcher = [sys.executable, "-m", "hf_lfi.precompute"]
            if processes > 1:
                launcher = [
                    *(sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"),
                    *("--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"),
                    *("--main_process_port", "29647", "-m", "hf_lfi.precompute"),
                ]
            print(f"  precompute: {args.precompute_rows} rows, {processes} process(es) x {threads} thread(s) ...")
            start = time.perf_counter()
            done = subprocess.run(
                [*launcher, *common, "--out", str(root / f"out-{processes}")],
                env=env,
                capture_output=True,
                text=True,
            )
            wall = time.perf_counter() - start
            if done.returncode != 0:
                raise RuntimeError(f"hf-lfi precompute failed:\n{done.stdout}\n{done.stderr}")
            row = {
                "processes": processes,
                "threads_per_process": threads,
                "rows": args.precompute_rows,
                "wall_s": wall,
                "rows_per_s_end_to_end": args.precompute_rows / wall,
                "rows_per_s_mapping": _rates(done.stdout + done.stderr),
            }
            print(
                f"  precompute: {processes} process(es): {wall:.1f} s, {row['rows_per_s_end_to_end']:.2f} rows/s end to "
                f"end, {row['rows_per_s_mapping']:.2f} rows/s mapping",
                flush=True,
            )
            rows.append(row)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default="all", help="comma-separated tests/tiny_vlms.py families, or all")
    parser.add_argument("--sizes", default="mid,real", help="comma-separated: mid, real")
    parser.add_argument(
        "--real-families",
        default="llava,qwen2_vl",
        help="families measured at the real size (comma-separated, or all)",
    )
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the family measurements")
    parser.add_argument("--cores", type=int, default=2, help="precompute: 1 process x cores threads, 2 x cores / 2")
    parser.add_argument("--precompute-rows", type=int, default=32, help="0 skips the precompute measurement")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_teacher.json"))
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_vlms import FAMILIES

    families = sorted(FAMILIES) if args.families == "all" else args.families.split(",")
    real = families if args.real_families == "all" else args.real_families.split(",")
    plan = [(f, s) for s in args.sizes.split(",") for f in (families if s == "mid" else real)]
    print(f"batch {args.batch}, {args.new_tokens} new tokens, {args.repeats} repeats, {args.threads} threads")
    rows = []
    for family, size in plan:
        rows.append(run_isolated(_family, family, size, args))
        print(HEADER + "\n" + _row(rows[-1]), flush=True)
    print("\n" + HEADER)
    for r in rows:
        print(_row(r))
    print(
        "ratio = median extractor / median generate (PASS/FAIL); paired = median of the per-repeat ratios (robust to "
        "load drift); min = fastest extractor / fastest generate (the least disturbed runs); CPU = the ratio of the "
        "median CPU times of the process (waits for a busy CPU left out)"
    )
    precompute = _precompute(args) if args.precompute_rows else []
    if precompute:
        print(
            f"\n{'processes':>9}{'threads':>8}{'rows':>6}{'wall s':>9}{'rows/s end to end':>19}{'rows/s mapping':>16}"
        )
        for p in precompute:
            print(
                f"{p['processes']:>9}{p['threads_per_process']:>8}{p['rows']:>6}{p['wall_s']:>9.1f}"
                f"{p['rows_per_s_end_to_end']:>19.2f}{p['rows_per_s_mapping']:>16.2f}"
            )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"config": vars(args), "families": rows, "precompute": precompute}, indent=2))


if __name__ == "__main__":
    main()
