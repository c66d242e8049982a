"""I-DETR vs DETR cost on CPU: parameters, FLOPs, forward latency, train-step time and peak memory.

    python benchmarks/bench_idetr.py                      # ResNet-18-style backbone, DETR transformer, 512 px, batch 2

Random weights, no downloads. The transformer is DETR's default (d_model 256, 6 + 6 layers, 8 heads, FFN 2048,
100 queries); the backbone is a ResNet-18-style `ResNetConfig` (basic blocks) to keep CPU time reasonable. DETR's
train step fine-tunes everything; the I-DETR step is the paper's: backbone frozen, interaction queries + gates +
heads trained, alignment term on the student maps. Also reports the parameter overhead at DETR-R50 size.
"""

import argparse
import json
import os

import torch
from timing import measure_steps, run_isolated
from torch.utils.flop_counter import FlopCounterMode
from transformers import DetrConfig, DetrForObjectDetection, ResNetConfig

import hf_lfi


def detr_kwargs(backbone: str) -> dict:
    if backbone == "r50":
        backbone_config = ResNetConfig(out_features=["stage4"])
    else:
        backbone_config = ResNetConfig(
            layer_type="basic", depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 256, 512], out_features=["stage4"]
        )
    return dict(use_timm_backbone=False, use_pretrained_backbone=False, backbone_config=backbone_config, num_labels=91)


def build(kind: str, backbone: str):
    config = detr_kwargs(backbone)
    if kind == "detr":
        return DetrForObjectDetection(DetrConfig(**config))
    return hf_lfi.IDetrForObjectDetection(hf_lfi.IDetrConfig(**config, freeze_backbone=True))


def count_parameters(kind: str, backbone: str) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in build(kind, backbone).parameters())


def count_flops(kind: str, backbone: str, size: int) -> int:
    """FLOPs of one image (a real CPU forward: DETR calls .item(), so the meta device cannot count it), with the
    attention in its eager form, whose matmuls the counter sees."""
    torch.manual_seed(0)
    model = build(kind, backbone).eval()
    model.set_attn_implementation({"": "eager"})
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(1, 3, size, size))
    return counter.get_total_flops()


def measure(kind, mode, backbone, size, batch_size, repeats, threads, queue):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build(kind, backbone)
    pixel_values = torch.randn(batch_size, 3, size, size)
    pixel_mask = torch.ones(batch_size, size, size, dtype=torch.long)
    pixel_mask[1:, :, size * 3 // 4 :] = 0  # padded images, as in a real batch
    labels = [
        {"class_labels": torch.tensor([1, 5]), "boxes": torch.tensor([[0.4, 0.4, 0.2, 0.3], [0.6, 0.5, 0.3, 0.3]])}
        for _ in range(batch_size)
    ]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    interactions = {"output_interactions": True} if kind == "idetr" else {}

    def step():
        if mode == "forward":
            with torch.inference_mode():
                model(pixel_values, pixel_mask=pixel_mask)
        else:
            out = model(pixel_values, pixel_mask=pixel_mask, labels=labels, **interactions)
            loss = out.loss + (sum(m.mean() for m in out.interaction_maps) if kind == "idetr" else 0)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    model.train(mode == "train")
    queue.put(measure_steps(step, repeats))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="r18", choices=["r18", "r50"])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--out", default="benchmarks/results/bench_idetr.json")
    args = parser.parse_args()

    rows = {}
    for kind in ("detr", "idetr"):
        rows[kind] = {
            "params": count_parameters(kind, args.backbone),
            "gflops_per_image": count_flops(kind, args.backbone, args.size) / 1e9,
        }
        for mode in ("forward", "train"):
            result = run_isolated(
                measure, kind, mode, args.backbone, args.size, args.batch_size, args.repeats, args.threads
            )
            rows[kind].update(
                {
                    f"{mode}_s": result["median_s"],
                    f"{mode}_min_s": result["min_s"],
                    f"{mode}_peak_mem_mb": result["peak_mem_mb"],
                }
            )
    r50 = {kind: count_parameters(kind, "r50") for kind in ("detr", "idetr")}
    ratios = {
        "params": rows["idetr"]["params"] / rows["detr"]["params"],
        "params_r50": r50["idetr"] / r50["detr"],
        "flops": rows["idetr"]["gflops_per_image"] / rows["detr"]["gflops_per_image"],
        "forward": rows["idetr"]["forward_s"] / rows["detr"]["forward_s"],
        "train_step": rows["idetr"]["train_s"] / rows["detr"]["train_s"],
        "forward_best": rows["idetr"]["forward_min_s"] / rows["detr"]["forward_min_s"],
        "train_step_best": rows["idetr"]["train_min_s"] / rows["detr"]["train_min_s"],
    }
    print(
        f"{args.backbone} backbone, {args.size} px, batch {args.batch_size}, {args.threads} threads, torch {torch.__version__}"
    )
    header = f"| {'model':5} | {'params (M)':>10} | {'GFLOPs/img':>10} | {'forward (s)':>11} | {'train step (s)':>14} | {'fwd peak (MB)':>13} | {'train peak (MB)':>15} |"
    print(header)
    print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
    for kind, row in rows.items():
        print(
            f"| {kind:5} | {row['params'] / 1e6:10.2f} | {row['gflops_per_image']:10.2f} | {row['forward_s']:11.3f} | "
            f"{row['train_s']:14.3f} | {row['forward_peak_mem_mb']:13.0f} | {row['train_peak_mem_mb']:15.0f} |"
        )
    print(
        f"DETR-R50 parameters {r50['detr'] / 1e6:.2f} M -> I-DETR-R50 {r50['idetr'] / 1e6:.2f} M "
        f"(+{100 * (ratios['params_r50'] - 1):.2f} %, target < 1 %)"
    )
    for name, ratio in ratios.items():
        print(f"I-DETR / DETR {name}: {ratio:.3f}x" + (" (target <= 1.2x)" if name.startswith("train_step") else ""))
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(
            {"args": vars(args), "torch": torch.__version__, "rows": rows, "r50_params": r50, "ratios": ratios},
            f,
            indent=2,
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
