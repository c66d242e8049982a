"""I-ViT vs ViT cost on CPU: parameters, FLOPs, forward latency, train-step time and peak memory.

    python benchmarks/bench_ivit.py                      # ViT-S/16 at 224 px, batch 8 (issue targets)
    python benchmarks/bench_ivit.py --preset ivit-b-16 --batch-size 4 --out benchmarks/results/ivit_b.json

Models have random weights. Each timing runs in a fresh process so its peak memory (RSS above the loaded
model) is its own. Times are medians (and minima) over repeats. The ViT uses the library's SDPA attention and its train step updates every parameter (full
fine-tuning); the I-ViT train step is the paper's: frozen backbone, interaction queries + gates + head trained.
"""

import argparse
import json
import os

import torch
from transformers import ViTForImageClassification

import hf_lfi
from timing import measure_steps, run_isolated


def build(kind: str, preset: str, gate_hidden_size: int):
    config = hf_lfi.preset_config(preset, gate_hidden_size=gate_hidden_size)
    if kind == "vit":
        return ViTForImageClassification(config.to_vit_config())
    return hf_lfi.IViTForImageClassification(config.__class__(**{**config.to_dict(), "freeze_backbone": True}))


def measure(kind, mode, preset, gate_hidden_size, batch_size, repeats, threads, queue):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build(kind, preset, gate_hidden_size)
    size = model.config.image_size
    pixel_values = torch.randn(batch_size, 3, size, size)
    labels = torch.randint(0, model.config.num_labels, (batch_size,))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    interactions = {"output_interactions": True} if kind == "ivit" else {}

    def step():
        if mode == "forward":
            with torch.inference_mode():
                model(pixel_values)
        else:
            out = model(pixel_values, labels=labels, **interactions)
            loss = out.loss + (sum(m.mean() for m in out.interaction_maps) if kind == "ivit" else 0)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    model.train(mode == "train")
    queue.put(measure_steps(step, repeats))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="ivit-s-16", choices=hf_lfi.PRESET_NAMES)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--gate-hidden-size", type=int, default=0)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--out", default="benchmarks/results/bench_ivit.json")
    args = parser.parse_args()

    config = hf_lfi.preset_config(args.preset, gate_hidden_size=args.gate_hidden_size)
    report, flops = hf_lfi.parameter_report(config), hf_lfi.flop_report(config)
    rows = {}
    for kind in ("vit", "ivit"):
        rows[kind] = {"params": report[f"{kind}_parameters"], "gflops_per_image": flops[f"{kind}_flops"] / 1e9}
        for mode in ("forward", "train"):
            result = run_isolated(measure, kind, mode, args.preset, args.gate_hidden_size, args.batch_size, args.repeats, args.threads)
            rows[kind][f"{mode}_s"] = result["median_s"]
            rows[kind][f"{mode}_min_s"] = result["min_s"]
            rows[kind][f"{mode}_peak_mem_mb"] = result["peak_mem_mb"]

    ratios = {
        "params": rows["ivit"]["params"] / rows["vit"]["params"],
        "flops": rows["ivit"]["gflops_per_image"] / rows["vit"]["gflops_per_image"],
        "forward": rows["ivit"]["forward_s"] / rows["vit"]["forward_s"],
        "train_step": rows["ivit"]["train_s"] / rows["vit"]["train_s"],
        # shared machines are noisy: the fastest repeat is the least disturbed estimate of each cost
        "forward_best": rows["ivit"]["forward_min_s"] / rows["vit"]["forward_min_s"],
        "train_step_best": rows["ivit"]["train_min_s"] / rows["vit"]["train_min_s"],
    }
    targets = {"flops": 1.17, "forward": 1.25, "train_step": 1.3, "forward_best": 1.25, "train_step_best": 1.3}
    print(f"{args.preset}, 224 px, batch {args.batch_size}, {args.threads} threads, torch {torch.__version__}, "
          f"gate_hidden_size={args.gate_hidden_size}")
    header = f"| {'model':5} | {'params (M)':>10} | {'GFLOPs/img':>10} | {'forward (s)':>11} | {'train step (s)':>14} | {'fwd peak (MB)':>13} | {'train peak (MB)':>15} |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for kind, row in rows.items():
        print(f"| {kind:5} | {row['params'] / 1e6:10.2f} | {row['gflops_per_image']:10.2f} | {row['forward_s']:11.3f} | "
              f"{row['train_s']:14.3f} | {row['forward_peak_mem_mb']:13.0f} | {row['train_peak_mem_mb']:15.0f} |")
    for name, ratio in ratios.items():
        target = f" (target <= {targets[name]:.2f}x)" if name in targets else ""
        print(f"I-ViT / ViT {name}: {ratio:.3f}x{target}")

    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"args": vars(args), "torch": torch.__version__, "rows": rows, "ratios": ratios, "targets": targets}, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
