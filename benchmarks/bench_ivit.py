"""I-ViT vs ViT cost on CPU per gate form: parameters, FLOPs, forward latency, train-step time and peak memory; the
compiled models; and, on a GPU, the interaction attention kernel against SDPA.

    python benchmarks/bench_ivit.py                      # ViT-S at 224 px (patch 16) and 518 px (patch 14, N = 1370)
    python benchmarks/bench_ivit.py --preset ivit-b-16 --sizes 224:16 --batch-size 4 --out benchmarks/results/ivit_b.json
    python benchmarks/bench_ivit.py students             # I-DINOv2, I-SigLIP against their source models
    python benchmarks/bench_ivit.py kernel               # GPU: the Triton kernel vs SDPA over the stacked queries

Models have random weights. Times are medians over `--repeats` rounds; in each round every model runs one step, the
ViT first, in one process, so load on a shared machine hits all of them alike: the ratio column is the median of the
per-round ratios to the ViT. Peak memory (RSS the step adds above the loaded model and inputs) is measured in a fresh
process per model. The ViT uses the library's SDPA attention and its train step updates every parameter (full
fine-tuning); the I-ViT train step is the paper's: frozen backbone, interaction queries + gates + head trained, the
student maps read. Gate forms: `element` (the paper's per-entry gate: the blockwise path, no N x N map), `row` /
`scalar` / `none` (gates constant along each query row: fused `scaled_dot_product_attention`). `--compile` adds
`torch.compile(fullgraph=True)` ViT vs I-ViT (element) forward rows at the first size. The load average is recorded.
"""

import argparse
import json
import os
import statistics
import sys
import time

import torch
from timing import measure_steps, run_isolated
from transformers import ViTForImageClassification

import hf_lfi

GATE_FORMS = {
    "element": {"gate_form": "element"},
    "row": {"gate_form": "row"},
    "scalar": {"gate_form": "scalar"},
    "none": {"gate_granularity": "none"},
}
# (size, gate form or "compiled", ratio) -> largest ratio to the ViT in the same run
TARGETS = {
    ("518", "element", "forward_peak_mem"): 1.3,
    ("518", "element", "forward"): 1.8,
    ("518", "element", "train_step"): 1.6,
    ("518", "element", "train_peak_mem"): 1.5,
    ("224", "element", "forward"): 1.15,
    ("224", "compiled", "forward"): 1.2,
}


def build(kind: str, preset: str, image_size: int, patch_size: int):
    config = hf_lfi.preset_config(preset, image_size=image_size, patch_size=patch_size, freeze_backbone=True)
    if kind == "vit":
        return ViTForImageClassification(config.to_vit_config())
    return hf_lfi.IViTForImageClassification(config.__class__(**{**config.to_dict(), **GATE_FORMS[kind]}))


def make_step(model, kind, mode, pixel_values, labels, compiled=False):
    """One forward (inference) or one training step (forward, loss with the student maps, backward, AdamW)."""
    model.train(mode == "train")
    run = torch.compile(model, fullgraph=True) if compiled else model
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    interactions = {"output_interactions": True} if kind != "vit" else {}

    def step():
        if mode == "forward":
            with torch.inference_mode():
                run(pixel_values)
            return
        out = run(pixel_values, labels=labels, **interactions)
        loss = out.loss + (sum(m.mean() for m in out.interaction_maps) if kind != "vit" else 0)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def _inputs(model, batch_size, image_size):
    return torch.randn(batch_size, 3, image_size, image_size), torch.randint(0, model.config.num_labels, (batch_size,))


def time_interleaved(kinds, mode, preset, image_size, patch_size, batch_size, repeats, threads, compiled, queue):
    """Times of `repeats` rounds, each running one step of every model in `kinds` (the ViT first)."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    steps = {}
    for kind in kinds:
        model = build(kind, preset, image_size, patch_size)
        steps[kind] = make_step(model, kind, mode, *_inputs(model, batch_size, image_size), compiled=compiled)
        start = time.perf_counter()
        for _ in range(2):  # warm-up (and compilation)
            steps[kind]()
        print(f"  {image_size} px {mode}: {kind} ready (warm-up {time.perf_counter() - start:.1f} s)", flush=True)
    times = {kind: [] for kind in kinds}
    started = time.perf_counter()
    for round_index in range(repeats):
        for kind in kinds:
            start = time.perf_counter()
            steps[kind]()
            times[kind].append(time.perf_counter() - start)
        elapsed = time.perf_counter() - started
        eta = elapsed / (round_index + 1) * (repeats - round_index - 1)
        line = ", ".join(f"{kind} {times[kind][-1]:.3f} s" for kind in kinds)
        print(f"  {image_size} px {mode} round {round_index + 1}/{repeats}: {line} (ETA {eta:.0f} s)", flush=True)
    queue.put(times)


def peak_memory(kind, mode, preset, image_size, patch_size, batch_size, threads, queue):
    """The RSS one step adds above the loaded model and inputs, in this fresh process."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build(kind, preset, image_size, patch_size)
    step = make_step(model, kind, mode, *_inputs(model, batch_size, image_size))
    queue.put(measure_steps(step, repeats=1, warmup=1)["peak_mem_mb"])


def _ratios(times: dict, kind: str, baseline: str) -> float:
    """The median over rounds of the time of `kind` over the baseline's in the same round."""
    return statistics.median(t / b for t, b in zip(times[kind], times[baseline]))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="ivit-s-16", choices=hf_lfi.PRESET_NAMES)
    parser.add_argument("--sizes", nargs="+", default=["224:16", "518:14"], help="image_size:patch_size pairs")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--forms", nargs="+", default=list(GATE_FORMS), choices=list(GATE_FORMS))
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--compile", action="store_true", help="add compiled ViT vs I-ViT (element) forward rows")
    parser.add_argument("--out", default="benchmarks/results/bench_ivit.json")
    args = parser.parse_args()

    load_before = os.getloadavg()
    print(
        f"{args.preset}, batch {args.batch_size}, {args.threads} threads, torch {torch.__version__}, "
        f"load average {load_before[0]:.1f} on {os.cpu_count()} cores",
        flush=True,
    )
    kinds = ("vit", *args.forms)
    results, checks = {}, []
    header = (
        f"| {'size':>4} | {'model':8} | {'params (M)':>10} | {'GFLOPs/img':>10} | {'forward (s)':>11} "
        f"| {'train step (s)':>14} | {'fwd peak (MB)':>13} | {'train peak (MB)':>15} | {'fwd x':>6} | {'train x':>7} "
        f"| {'fwd mem x':>9} | {'train mem x':>11} |"
    )
    lines = [header, "|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|"]
    for size_spec in args.sizes:
        image_size, patch_size = (int(v) for v in size_spec.split(":"))
        rows = {}
        for kind in kinds:
            config = hf_lfi.preset_config(
                args.preset, image_size=image_size, patch_size=patch_size, **GATE_FORMS.get(kind, {})
            )
            report, flops = hf_lfi.parameter_report(config), hf_lfi.flop_report(config)
            key = "vit" if kind == "vit" else "ivit"
            rows[kind] = {"params": report[f"{key}_parameters"], "gflops_per_image": flops[f"{key}_flops"] / 1e9}
        for mode in ("forward", "train"):
            print(f"{image_size} px {mode}: timing {', '.join(kinds)} interleaved, {args.repeats} rounds", flush=True)
            times = run_isolated(
                time_interleaved,
                kinds,
                mode,
                args.preset,
                image_size,
                patch_size,
                args.batch_size,
                args.repeats,
                args.threads,
                False,
            )
            for kind in kinds:
                rows[kind][f"{mode}_s"] = statistics.median(times[kind])
                rows[kind][f"{mode}_times_s"] = times[kind]
                rows[kind].setdefault("ratios", {})["forward" if mode == "forward" else "train_step"] = _ratios(
                    times, kind, "vit"
                )
            for kind in kinds:
                peak = run_isolated(
                    peak_memory, kind, mode, args.preset, image_size, patch_size, args.batch_size, args.threads
                )
                rows[kind][f"{mode}_peak_mem_mb"] = peak
                print(f"  {image_size} px {mode}: {kind} peak memory {peak:.0f} MB", flush=True)
        vit = rows["vit"]
        for kind, row in rows.items():
            row["ratios"]["forward_peak_mem"] = row["forward_peak_mem_mb"] / max(vit["forward_peak_mem_mb"], 1e-9)
            row["ratios"]["train_peak_mem"] = row["train_peak_mem_mb"] / max(vit["train_peak_mem_mb"], 1e-9)
            r = row["ratios"]
            lines.append(
                f"| {image_size:4} | {kind:8} | {row['params'] / 1e6:10.2f} | {row['gflops_per_image']:10.2f} "
                f"| {row['forward_s']:11.3f} | {row['train_s']:14.3f} | {row['forward_peak_mem_mb']:13.0f} "
                f"| {row['train_peak_mem_mb']:15.0f} | {r['forward']:6.2f} | {r['train_step']:7.2f} "
                f"| {r['forward_peak_mem']:9.2f} | {r['train_peak_mem']:11.2f} |"
            )
        results[str(image_size)] = rows

    if args.compile:
        image_size, patch_size = (int(v) for v in args.sizes[0].split(":"))
        print(f"{image_size} px forward, torch.compile(fullgraph=True): vit, element interleaved", flush=True)
        times = run_isolated(
            time_interleaved,
            ("vit", "element"),
            "forward",
            args.preset,
            image_size,
            patch_size,
            args.batch_size,
            args.repeats,
            args.threads,
            True,
        )
        compiled = {f"{kind}_forward_s": statistics.median(t) for kind, t in times.items()}
        compiled.update(times_s=times, ratios={"forward": _ratios(times, "element", "vit")})
        results.setdefault(str(image_size), {})["compiled"] = compiled
        lines.append(
            f"\ncompiled (fullgraph), {image_size} px forward: ViT {compiled['vit_forward_s']:.3f} s, I-ViT (element) "
            f"{compiled['element_forward_s']:.3f} s, ratio {compiled['ratios']['forward']:.2f}"
        )

    load_after = os.getloadavg()
    print("\n".join(lines))
    for (size, kind, ratio), limit in TARGETS.items():
        row = results.get(size, {}).get(kind)
        if row is None:
            continue
        value = row["ratios"][ratio]
        checks.append({"size": size, "model": kind, "ratio": ratio, "value": value, "target": limit})
        verdict = "PASS" if value <= limit else "FAIL"
        print(f"{verdict}: {kind} {ratio} at {size} px = {value:.2f}x the ViT's (target <= {limit}x)")
    print(f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after ({os.cpu_count()} cores)")

    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(
            {
                "args": vars(args),
                "torch": torch.__version__,
                "load_average": {"before": load_before, "after": load_after},
                "results": results,
                "targets": checks,
            },
            f,
            indent=2,
        )
    print(f"wrote {args.out}")


def build_student(kind: str, preset: str):
    """The I-model of a student preset (`hf_lfi.STUDENT_PRESET_NAMES`) or, for `kind="source"`, the model it extends."""
    config = hf_lfi.preset_config(preset, freeze_backbone=True)
    model_class = hf_lfi.students.interaction_model_class(config)
    return model_class.baseline_model(config) if kind == "source" else model_class(config)


def measure_student(kind, mode, preset, batch_size, repeats, threads, queue):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_student(kind, preset).train(mode == "train")
    size = hf_lfi.preset_config(preset).image_size
    pixel_values, labels = torch.randn(batch_size, 3, size, size), torch.randint(0, 1000, (batch_size,))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    interactions = {"output_interactions": True} if kind == "student" else {}

    def step():
        if mode == "forward":
            with torch.inference_mode():
                model(pixel_values)
            return
        out = model(pixel_values, labels=labels, **interactions)
        (out.loss + sum(m.mean() for m in getattr(out, "interaction_maps", None) or ())).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    queue.put(measure_steps(step, repeats))


def students_main():
    """`python benchmarks/bench_ivit.py students [--batch-size 8 ...]`: one row per student preset beyond ViT
    (I-DINOv2-S/14, I-SigLIP-B/16 at 224 px) against its source model, as the I-ViT rows above."""
    parser = argparse.ArgumentParser(description=students_main.__doc__)
    parser.add_argument(
        "--presets", nargs="+", default=["idinov2-s-14", "isiglip-b-16"], choices=hf_lfi.STUDENT_PRESET_NAMES
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--out", default="benchmarks/results/bench_students.json")
    args = parser.parse_args(sys.argv[2:])
    rows = {}
    for preset in args.presets:
        report = hf_lfi.parameter_report(hf_lfi.preset_config(preset))
        row = {"source": report["source"], "params_ratio": report["ivit_parameters"] / report["vit_parameters"]}
        for mode in ("forward", "train"):
            times = {
                kind: run_isolated(measure_student, kind, mode, preset, args.batch_size, args.repeats, args.threads)
                for kind in ("source", "student")
            }
            row[f"{mode}_s"] = {kind: t["median_s"] for kind, t in times.items()}
            row[f"{mode}_ratio"] = times["student"]["median_s"] / times["source"]["median_s"]
        rows[preset] = row
        print(
            f"| {preset} | {row['source']} | params x{row['params_ratio']:.3f} | forward x{row['forward_ratio']:.2f} "
            f"({row['forward_s']['student']:.3f} s) | train step x{row['train_ratio']:.2f} ({row['train_s']['student']:.3f} s) |"
        )
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"args": vars(args), "torch": torch.__version__, "rows": rows}, f, indent=2)


def _cuda_time(fn, repeats: int) -> float:
    """Median milliseconds of `fn` on the GPU (CUDA events), after two warm-up calls."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _cuda_peak_mb(fn) -> float:
    """The GPU memory one call of `fn` allocates at its peak above what was allocated before."""
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / 2**20


def kernel_main():
    """`python benchmarks/bench_ivit.py kernel [--tokens 197 577 1370 2048] [--dtype bfloat16]`: on a CUDA GPU, one
    layer's interaction attention with the per-element gate: the Triton kernel against `scaled_dot_product_attention`
    over the same stacked queries [P_q; P'_q] (which cannot gate per element: the speed to match), forward and
    forward + backward, and the peak memory per N (the kernel's grows linearly; a materialised map's would not)."""
    parser = argparse.ArgumentParser(description=kernel_main.__doc__)
    parser.add_argument("--tokens", type=int, nargs="+", default=[197, 577, 1370, 2048])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--dtype", default="bfloat16", choices=["float16", "bfloat16", "float32"])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default="benchmarks/results/bench_kernel.json")
    args = parser.parse_args(sys.argv[2:])
    from hf_lfi.modeling import triton_attention

    if not torch.cuda.is_available() or not triton_attention.triton_is_available():
        raise SystemExit("The kernel benchmark needs a CUDA GPU and triton (CUDA builds of torch bring it).")
    dtype, device = getattr(torch, args.dtype), "cuda"
    print(f"{torch.cuda.get_device_name()}, batch {args.batch_size}, {args.heads} heads x {args.head_dim}, {dtype}")
    rows = {}
    for tokens in args.tokens:
        shape = (args.batch_size, args.heads, tokens, args.head_dim)
        query, interaction_query, key, value = (
            torch.randn(shape, device=device, dtype=dtype, requires_grad=True) for _ in range(4)
        )
        weight = (torch.randn(args.heads, 2, 2, device=device) * 0.1 * tokens).requires_grad_()
        bias = torch.randn(args.heads, 2, device=device, requires_grad=True)
        cls_row = torch.ones(args.batch_size, 1, device=device, dtype=dtype)
        scale = args.head_dim**-0.5

        def kernel():
            output, columns, _ = triton_attention.triton_interaction_attention(
                query, interaction_query, key, value, None, scale, (weight, bias), cls_row, return_gate_means=True
            )
            return output, columns

        def sdpa():
            stacked = torch.cat([query, interaction_query], dim=2)
            return torch.nn.functional.scaled_dot_product_attention(stacked, key, value, scale=scale), None

        row = {}
        for name, fn in (("sdpa", sdpa), ("kernel", kernel)):
            with torch.no_grad():
                row[f"{name}_forward_ms"] = _cuda_time(fn, args.repeats)
                row[f"{name}_forward_peak_mb"] = _cuda_peak_mb(fn)

            def train(fn=fn):
                output, columns = fn()
                (output.float().sum() + (columns.float().sum() if columns is not None else 0)).backward()

            row[f"{name}_train_ms"] = _cuda_time(train, args.repeats)
            row[f"{name}_train_peak_mb"] = _cuda_peak_mb(train)
        row["forward_ratio"] = row["kernel_forward_ms"] / row["sdpa_forward_ms"]
        row["train_ratio"] = row["kernel_train_ms"] / row["sdpa_train_ms"]
        row["materialised_maps_mb"] = 3 * 2 * args.batch_size * args.heads * tokens**2 * 4 / 2**20
        rows[tokens] = row
        print(
            f"| N {tokens:5} | forward: SDPA {row['sdpa_forward_ms']:7.2f} ms, kernel {row['kernel_forward_ms']:7.2f} ms "
            f"({row['forward_ratio']:.2f}x) | fwd+bwd: SDPA {row['sdpa_train_ms']:7.2f} ms, kernel "
            f"{row['kernel_train_ms']:7.2f} ms ({row['train_ratio']:.2f}x) | peak: kernel fwd "
            f"{row['kernel_forward_peak_mb']:7.1f} MB, fwd+bwd {row['kernel_train_peak_mb']:7.1f} MB "
            f"(materialised scores, maps, gates: {row['materialised_maps_mb']:7.0f} MB) |",
            flush=True,
        )
    if 1370 in rows:
        ratio = rows[1370]["forward_ratio"]
        print(f"{'PASS' if ratio <= 1.5 else 'FAIL'}: kernel forward at N = 1370 = {ratio:.2f}x SDPA (target <= 1.5x)")
    first, last = min(rows), max(rows)
    growth = rows[last]["kernel_train_peak_mb"] / max(rows[first]["kernel_train_peak_mb"], 1e-9)
    linear = growth <= 1.25 * last / first
    print(
        f"{'PASS' if linear else 'FAIL'}: kernel fwd+bwd peak memory x{growth:.1f} from N = {first} to {last} (N x{last / first:.1f})"
    )
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"args": vars(args), "torch": torch.__version__, "rows": rows}, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    {"students": students_main, "kernel": kernel_main}.get(sys.argv[1] if len(sys.argv) > 1 else "", main)()
