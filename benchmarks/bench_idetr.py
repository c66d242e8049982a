"""I-DETR systems vs their baselines on CPU: parameters, FLOPs, forward latency, train-step time and peak memory.

    python benchmarks/bench_idetr.py                          # every system: ResNet-18-style backbone, 512 px, batch 2
    python benchmarks/bench_idetr.py --systems segmentation --size 384

Systems (each I-model against its source model, measured in the same run):
- `detection`: I-DETR vs DETR (`DetrForObjectDetection`);
- `segmentation`: I-DETR vs DETR with DETR's mask head (`DetrForSegmentation`, the paper's Table 6 system);
- `conditional`: I-Conditional-DETR vs Conditional-DETR (the paper's Table 7 system).

Random weights, no downloads. The transformer is the library default (d_model 256, 6 + 6 layers, 8 heads, FFN 2048;
100 queries for DETR, 300 for Conditional-DETR); the backbone is a ResNet-18-style `ResNetConfig` (basic blocks) to
keep CPU time reasonable. The baseline's train step fine-tunes everything; the I-model's step is the paper's: backbone
frozen, interaction queries + gates + heads (+ mask head) trained, alignment term on the student maps. Also reports
the parameter overhead at R50 size (paper: 42.9M -> 43.3M for segmentation).
"""

import argparse
import json
import os

import torch
from timing import measure_steps, run_isolated
from torch.utils.flop_counter import FlopCounterMode
from transformers import ResNetConfig

import hf_lfi

# system -> (I-model class, backbone stages it reads); its baseline is `model_class.baseline_model(config)`
SYSTEMS = {
    "detection": (hf_lfi.IDetrForObjectDetection, 1),
    "segmentation": (hf_lfi.IDetrForSegmentation, 4),
    "conditional": (hf_lfi.IConditionalDetrForObjectDetection, 1),
}


def detr_kwargs(backbone: str, stages: int) -> dict:
    out_features = [f"stage{i}" for i in range(5 - stages, 5)]
    if backbone == "r50":
        backbone_config = ResNetConfig(out_features=out_features)
    else:
        backbone_config = ResNetConfig(
            layer_type="basic", depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 256, 512], out_features=out_features
        )
    return dict(use_timm_backbone=False, use_pretrained_backbone=False, backbone_config=backbone_config, num_labels=91)


def build(system: str, kind: str, backbone: str):
    model_class, stages = SYSTEMS[system]
    config = model_class.config_class(**detr_kwargs(backbone, stages), freeze_backbone=True)
    return model_class.baseline_model(config) if kind == "baseline" else model_class(config)


def count_parameters(system: str, kind: str, backbone: str) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in build(system, kind, backbone).parameters())


def count_flops(system: str, kind: str, backbone: str, size: int) -> int:
    """FLOPs of one image (a real CPU forward: DETR calls .item(), so the meta device cannot count it), with the
    attention in its eager form, whose matmuls the counter sees."""
    torch.manual_seed(0)
    model = build(system, kind, backbone).eval()
    model.set_attn_implementation({"": "eager"})
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(1, 3, size, size))
    return counter.get_total_flops()


def measure(system, kind, mode, backbone, size, batch_size, repeats, threads, queue):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build(system, kind, backbone)
    pixel_values = torch.randn(batch_size, 3, size, size)
    pixel_mask = torch.ones(batch_size, size, size, dtype=torch.long)
    pixel_mask[1:, :, size * 3 // 4 :] = 0  # padded images, as in a real batch
    labels = [
        {"class_labels": torch.tensor([1, 5]), "boxes": torch.tensor([[0.4, 0.4, 0.2, 0.3], [0.6, 0.5, 0.3, 0.3]])}
        for _ in range(batch_size)
    ]
    if system == "segmentation":  # one mask per box, at each image's real size
        for i, target in enumerate(labels):
            width = size * 3 // 4 if i else size
            target["masks"] = torch.zeros(2, size, width)
            target["masks"][0, size // 4 : size // 2, : width // 2] = 1
            target["masks"][1, size // 2 :, width // 2 :] = 1
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    interactions = {"output_interactions": True} if kind == "interaction" else {}

    def step():
        if mode == "forward":
            with torch.inference_mode():
                model(pixel_values, pixel_mask=pixel_mask)
        else:
            out = model(pixel_values, pixel_mask=pixel_mask, labels=labels, **interactions)
            loss = out.loss + (sum(m.mean() for m in out.interaction_maps) if kind == "interaction" else 0)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    model.train(mode == "train")
    queue.put(measure_steps(step, repeats))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    parser.add_argument("--backbone", default="r18", choices=["r18", "r50"])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--out", default="benchmarks/results/bench_idetr.json")
    args = parser.parse_args()

    results = {}
    for system in args.systems:
        rows = {}
        for kind in ("baseline", "interaction"):
            rows[kind] = {
                "params": count_parameters(system, kind, args.backbone),
                "gflops_per_image": count_flops(system, kind, args.backbone, args.size) / 1e9,
            }
            for mode in ("forward", "train"):
                result = run_isolated(
                    measure, system, kind, mode, args.backbone, args.size, args.batch_size, args.repeats, args.threads
                )
                rows[kind].update(
                    {
                        f"{mode}_s": result["median_s"],
                        f"{mode}_min_s": result["min_s"],
                        f"{mode}_peak_mem_mb": result["peak_mem_mb"],
                    }
                )
        r50 = {kind: count_parameters(system, kind, "r50") for kind in ("baseline", "interaction")}
        new, old = rows["interaction"], rows["baseline"]
        ratios = {
            "params": new["params"] / old["params"],
            "params_r50": r50["interaction"] / r50["baseline"],
            "flops": new["gflops_per_image"] / old["gflops_per_image"],
            "forward": new["forward_s"] / old["forward_s"],
            "train_step": new["train_s"] / old["train_s"],
            "forward_best": new["forward_min_s"] / old["forward_min_s"],
            "train_step_best": new["train_min_s"] / old["train_min_s"],
        }
        results[system] = {"rows": rows, "r50_params": r50, "ratios": ratios}

    print(
        f"{args.backbone} backbone, {args.size} px, batch {args.batch_size}, {args.threads} threads, torch {torch.__version__}"
    )
    header = f"| {'system':12} | {'model':11} | {'params (M)':>10} | {'GFLOPs/img':>10} | {'forward (s)':>11} | {'train step (s)':>14} | {'fwd peak (MB)':>13} | {'train peak (MB)':>15} |"
    print(header)
    print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
    for system, result in results.items():
        for kind, row in result["rows"].items():
            print(
                f"| {system:12} | {kind:11} | {row['params'] / 1e6:10.2f} | {row['gflops_per_image']:10.2f} | "
                f"{row['forward_s']:11.3f} | {row['train_s']:14.3f} | {row['forward_peak_mem_mb']:13.0f} | "
                f"{row['train_peak_mem_mb']:15.0f} |"
            )
    for system, result in results.items():
        r50, ratios = result["r50_params"], result["ratios"]
        print(
            f"{system}: R50 parameters {r50['baseline'] / 1e6:.2f} M -> {r50['interaction'] / 1e6:.2f} M "
            f"(+{100 * (ratios['params_r50'] - 1):.2f} %, target < 1 %); "
            + ", ".join(f"{name} {ratio:.3f}x" for name, ratio in ratios.items() if name != "params_r50")
        )
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"args": vars(args), "torch": torch.__version__, "systems": results}, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
