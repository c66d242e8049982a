"""Reproduce the paper's comparisons (paper.md section 4) on an image-classification dataset with masks, through
the same recipe users run (`hf-lfi train`, `hf_lfi.recipe`): accuracy, convergence, data efficiency, Table 3 ablations, closeness to the
masks (Fig. 6), gates per layer (Fig. 11), in two protocols, over several seeds.

    python benchmarks/reproduce.py --data ../shared/data/emoji-shift --out results/emoji-shift
    python benchmarks/reproduce.py --data ../shared/data/emoji-noshortcut ../shared/data/emoji-shift --out results/both
    python benchmarks/reproduce.py --data ../shared/data/emoji-shift --teacher-maps PATH_OR_HUB_ID   # LLaVA maps
    python benchmarks/reproduce.py --data ../shared/data/emoji-shift --out /tmp/quick --quick        # minutes

Protocol A (paper Table 2, from scratch, everything trains): ViT; I-ViT (full); the Table 3 ablations -- interaction
queries + gate without the constraint (alignment weight 0), the constraint on the original queries (student map read
from C_VFM), interaction queries + constraint without the gate (C_F = (C_AGT + C_VFM) / 2); I-ViT with a degraded
teacher; ViT and I-ViT on 50 % and 10 % of the training data.
Protocol B (the paper's main protocol): each protocol-A ViT converted to I-ViT (backbone frozen, interaction queries
+ gates + head trained) vs the same ViT trained on for the same budget.

Teacher: without `--teacher-maps`, a *mask teacher* (the dataset's segmentation masks as interaction maps, 24 x 24)
and, for comparison, a degraded one (blur 1.5 cells, 30 % of the mass leaked to the background). With it, the
precomputed maps of that interaction dataset (its train split replaces the dataset's). Hyperparameters are fixed
here, not tuned (no test split is used for any choice); every number comes from this run. Writes results.json,
report.md and PNG plots to --out (one folder per dataset when several `--data` are given, and a report.md that joins
them). The gate form is the package default (`IViTConfig`'s gate fields, chosen by benchmarks/gate_study.py on
validation accuracy); the report names it.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

import hf_lfi
from hf_lfi import metrics, recipe
from hf_lfi.interactions import mask_to_interaction_map, plot_interaction_maps
from hf_lfi.training import load_image_dataset

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ("validation", "test_iid", "test_shifted")
PAPER = {
    "Table 2 (TinyImageNet from scratch, ViT-L -> I-ViT-L, data 100/50/10/1 %)": "32.67 -> 34.12, 27.04 -> 29.04, 12.64 -> 15.60, 2.86 -> 3.07",
    "Table 3 (ViT-L 87.8)": "IQ+GC without constraint 89.6; constraint on original queries 80.7; IQ+IC without gate 90.3; full 91.1",
    "Fig. 3": "I-ViT-L reaches ViT-L's accuracy about 7x faster",
    "Fig. 6": "cosine to human masks: C_AGT > C_VLM > C_VFM",
}


def variants(args) -> dict[str, list[str]]:
    """Protocol-A runs: name -> recipe flags on top of the common ones."""
    teacher = (
        ["--interaction_dataset", args.teacher_maps, "--teacher", "dataset"]
        if args.teacher_maps
        else ["--teacher", "mask"]
    )
    runs = {
        "vit": ["--method", "vit"],
        "ivit": ["--method", "ivit", *teacher],
        "ablation_no_constraint": ["--method", "ivit", "--alignment_weight", "0"],
        "ablation_constraint_on_original": [
            "--method",
            "ivit",
            *teacher,
            "--config_overrides",
            f"{args.model},student_map_source=original",
        ],
        "ablation_no_gate": [
            "--method",
            "ivit",
            *teacher,
            "--config_overrides",
            f"{args.model},gate_granularity=none",
        ],
    }
    if not args.teacher_maps:
        runs["ivit_degraded_teacher"] = [
            "--method",
            "ivit",
            *teacher,
            "--mask_teacher_blur",
            "1.5",
            "--mask_teacher_leak",
            "0.3",
        ]
    for ratio in args.ratios:
        if ratio < 1:
            runs[f"vit_data{int(ratio * 100)}"] = ["--method", "vit", "--data_ratio", str(ratio)]
            runs[f"ivit_data{int(ratio * 100)}"] = ["--method", "ivit", *teacher, "--data_ratio", str(ratio)]
    return runs


def common_flags(args, data: str, seed: int, output_dir: Path) -> list[str]:
    flags = [
        "--dataset_name",
        data,
        "--config_overrides",
        args.model,
        "--mask_teacher_grid",
        "24",
        "--test_splits",
        "test_iid",
        "test_shifted",
        "--output_dir",
        str(output_dir),
        "--seed",
        str(seed),
        "--num_train_epochs",
        str(args.epochs),
        "--per_device_train_batch_size",
        "64",
        "--per_device_eval_batch_size",
        "128",
        "--learning_rate",
        "1e-3",
        "--weight_decay",
        "0.05",
        "--warmup_steps",
        "20",
        "--lr_scheduler_type",
        "cosine",
        "--crop_scale_min",
        "0.5",
        "--eval_strategy",
        "epoch",
        "--save_strategy",
        "no",
        "--logging_steps",
        "20",
        "--report_to",
        "none",
        "--disable_tqdm",
        "true",
        "--log_level",
        "error",
        "--use_cpu",
        "true",
        "--overwrite_output_dir",  # a rerun (or one after a kill) replaces the run
        "true",
    ]
    if args.quick:
        flags += ["--max_train_samples", "256", "--max_eval_samples", "64"]
    return flags


def with_overrides(flags: list[str], extra: list[str]) -> list[str]:
    """Flags with `extra` appended; a repeated `--config_overrides` replaces the common one."""
    if "--config_overrides" in extra:
        at = flags.index("--config_overrides")
        flags = flags[:at] + flags[at + 2 :]
    return flags + extra


def read_run(output_dir: Path) -> dict:
    results = json.loads((output_dir / "all_results.json").read_text())
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    curve = [(e["step"], e["eval_accuracy"]) for e in history if "eval_accuracy" in e]
    return {
        "accuracy": {split: results.get(f"{split}_accuracy") for split in SPLITS},
        "curve": curve,
        "train_runtime": results.get("train_runtime"),
    }


def human_alignment(model_dir: Path, data, num_images: int, mask_teacher: bool) -> dict:
    """Per layer: cosine / IoU-at-top-k between the masks and C_VFM, C_AGT (I-ViT), and the mean gates (g1, g2); the
    ViT baseline's C_VFM is its own CLS attention (eager `output_attentions`). With the mask teacher, also the teacher
    maps against the same masks."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    alignment = metrics.load("interaction_alignment")
    model = AutoModelForImageClassification.from_pretrained(model_dir).eval()
    processor = AutoImageProcessor.from_pretrained(model_dir)
    rows = data.select(range(min(num_images, len(data))))
    masks = [np.array(mask) for mask in rows["mask"]]
    pixel_values = processor([image.convert("RGB") for image in rows["image"]], return_tensors="pt")["pixel_values"]

    def score(maps) -> dict:
        return alignment.compute(predictions=[m.numpy() for m in maps], references=masks)

    out: dict = {"layers": {}}
    with torch.no_grad():
        if isinstance(model, hf_lfi.IViTForImageClassification):
            maps = {}
            for source in ("interaction", "original"):  # read the student map from C_AGT, then from C_VFM
                model.config.student_map_source = source
                outputs = model(pixel_values, output_interactions=True)
                maps[source] = outputs.interaction_maps
            for position, layer in enumerate(model.config.interaction_layer_indices):
                gates = outputs.gates[position]  # [images, heads, 2]: spread over images and heads
                g1, g2 = gates.mean(dim=(0, 1)).tolist()
                g1_std, g2_std = gates.flatten(0, 1).std(dim=0).tolist()
                out["layers"][layer] = {
                    "C_VFM": score(maps["original"][position]),
                    "C_AGT": score(maps["interaction"][position]),
                    "gates": {"g1": g1, "g2": g2, "g1_std": g1_std, "g2_std": g2_std},
                }
        else:
            model.set_attn_implementation("eager")
            for layer, attention in enumerate(model(pixel_values, output_attentions=True).attentions):
                cls_rows = attention[:, :, 0, 1:].mean(1)
                side = int(round(cls_rows.shape[-1] ** 0.5))
                out["layers"][layer] = {
                    "C_VFM": score((cls_rows / cls_rows.sum(-1, keepdim=True)).view(-1, side, side))
                }
    if mask_teacher:
        out["teacher"] = score([mask_to_interaction_map(mask, (24, 24)) for mask in masks])
    return out


def mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fmt(values) -> str:
    mean, std = mean_std(values)
    return "n/a" if mean is None else f"{mean:.3f} ± {std:.3f}"


def plot_convergence(runs: dict, path: Path) -> None:
    figure = Figure(figsize=(6, 4), layout="constrained")
    axis = figure.subplots()
    for name in ("vit", "ivit"):
        curves = [r["curve"] for r in runs.get(name, [])]
        if curves:
            length = min(len(c) for c in curves)
            steps = [step for step, _ in curves[0][:length]]
            accuracy = [statistics.mean(c[i][1] for c in curves) for i in range(length)]
            axis.plot(steps, accuracy, marker="o", label=name.upper().replace("IVIT", "I-ViT").replace("VIT", "ViT"))
    axis.set_xlabel("training step")
    axis.set_ylabel("validation accuracy (mean over seeds)")
    axis.legend()
    figure.savefig(path, dpi=100)


def steps_to_reach(curves_fast, curves_slow) -> tuple[float | None, float | None]:
    """Mean over seeds of the first step where the I-ViT curve reaches the ViT's best validation accuracy, and the
    ViT's step of its best accuracy."""
    reached, best_steps = [], []
    for fast, slow in zip(curves_fast, curves_slow):
        best_step, best = max(slow, key=lambda point: point[1])
        best_steps.append(best_step)
        hit = next((step for step, accuracy in fast if accuracy >= best), None)
        if hit is not None:
            reached.append(hit)
    return (statistics.mean(reached) if reached else None), (statistics.mean(best_steps) if best_steps else None)


def plot_alignment(alignment: dict, path: Path, title: str) -> None:
    """Cosine to the masks per layer, and the gates per layer (paper Fig. 11: g1 and g2, mean ± std over images and
    heads) of the run named in `title`."""
    figure = Figure(figsize=(9, 3.5), layout="constrained")
    figure.suptitle(title, fontsize=9)
    cosine_axis, gate_axis = figure.subplots(1, 2)
    ivit = alignment.get("ivit", {}).get("layers", {})
    vit = alignment.get("vit", {}).get("layers", {})
    layers = sorted(ivit, key=int)
    for name, source in (
        ("I-ViT C_AGT", (ivit, "C_AGT")),
        ("I-ViT C_VFM", (ivit, "C_VFM")),
        ("ViT C_VFM", (vit, "C_VFM")),
    ):
        table, key = source
        values = [table[layer][key]["cosine_similarity"] for layer in sorted(table, key=int) if key in table[layer]]
        if values:
            cosine_axis.plot(
                [int(layer) for layer in sorted(table, key=int)][: len(values)], values, marker="o", label=name
            )
    if "teacher" in alignment.get("ivit", {}):
        cosine_axis.axhline(
            alignment["ivit"]["teacher"]["cosine_similarity"], linestyle="--", color="gray", label="teacher"
        )
    cosine_axis.set_xlabel("layer")
    cosine_axis.xaxis.get_major_locator().set_params(integer=True)
    cosine_axis.set_ylabel("cosine to the masks")
    cosine_axis.legend(fontsize=7)
    if layers:
        for key, label in (("g1", "g1 (C_AGT)"), ("g2", "g2 (C_VFM)")):
            gate_axis.errorbar(
                [int(layer) for layer in layers],
                [ivit[layer]["gates"][key] for layer in layers],
                yerr=[ivit[layer]["gates"].get(f"{key}_std", 0.0) for layer in layers],
                marker="o",
                capsize=3,
                label=label,
            )
        gate_axis.set_xlabel("layer")
        gate_axis.xaxis.get_major_locator().set_params(integer=True)
        gate_axis.set_ylabel("mean gate")
        gate_axis.legend(fontsize=7)
    figure.savefig(path, dpi=100)


def plot_examples(model_dir: Path, data, path: Path, num_images: int = 6) -> None:
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(model_dir).eval()
    processor = AutoImageProcessor.from_pretrained(model_dir)
    rows = data.select(range(min(num_images, len(data))))
    images = [image.convert("RGB") for image in rows["image"]]
    with torch.no_grad():
        pixel_values = processor(images, return_tensors="pt")["pixel_values"]
        agt = model(pixel_values, output_interactions=True).interaction_maps[-1]
        model.config.student_map_source = "original"
        vfm = model(pixel_values, output_interactions=True).interaction_maps[-1]
        model.config.student_map_source = "interaction"
    masks = [np.array(mask) for mask in rows["mask"]]
    maps = [
        [mask > 0, mask_to_interaction_map(mask, (24, 24)).numpy(), v.numpy(), a.numpy()]
        for mask, v, a in zip(masks, vfm, agt)
    ]
    plot_interaction_maps(
        images, maps, titles=["mask", "teacher", "C_VFM (last layer)", "C_AGT (last layer)"], path=path
    )


def write_report(summary: dict, out: Path) -> None:
    runs, alignment = summary["runs"], summary["alignment"]
    lines = [
        f"# hf_lfi reproduction on `{summary['data']}`",
        "",
        *(
            [
                "**Quick mode: a smoke test (1 seed, 256 training / 64 evaluation rows, a tiny model). Its numbers say "
                "that the pipeline runs, not how LFI compares.**",
                "",
            ]
            if summary["quick"]
            else []
        ),
        f"Teacher: {summary['teacher']}. Seeds: {summary['seeds']}. Epochs: {summary['epochs']}. Model: `{summary['model']}`. "
        f"Gate: {summary['gate']}. Wall time {summary['wall_time_min']:.1f} min.",
        "Hyperparameters are fixed in benchmarks/reproduce.py, not tuned; no test split informed any choice.",
        "",
        "## Accuracy (mean ± std over seeds)",
        "",
        "| run | " + " | ".join(SPLITS) + " |",
        "|---|" + "---|" * len(SPLITS),
    ]
    for name, seeds in runs.items():
        lines.append(f"| {name} | " + " | ".join(fmt([r["accuracy"][s] for r in seeds]) for s in SPLITS) + " |")
    reach, best = summary["convergence"]["ivit_steps_to_vit_best"], summary["convergence"]["vit_best_step"]
    lines += [
        "",
        "## Convergence",
        "",
        "![convergence](convergence.png)",
        "",
        f"ViT reaches its best validation accuracy at step {best if best is not None else 'n/a'} (mean over seeds); "
        + (
            f"I-ViT first reaches it at step {reach:.0f} ({best / reach:.1f}x fewer steps)."
            if reach
            else "I-ViT does not reach it in this budget."
        ),
        "",
        "## Closeness to the masks (test_iid images; cosine similarity / IoU of the top-k cells)",
        "",
    ]
    lines += [
        "| model | layer | C_VFM cosine | C_AGT cosine | C_VFM IoU | C_AGT IoU | g1 | g2 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, table in alignment.items():
        for layer, entry in table["layers"].items():
            vfm, agt, gates = entry.get("C_VFM", {}), entry.get("C_AGT", {}), entry.get("gates", {})
            cells = [
                vfm.get("cosine_similarity"),
                agt.get("cosine_similarity"),
                vfm.get("iou_at_top_k"),
                agt.get("iou_at_top_k"),
                gates.get("g1"),
                gates.get("g2"),
            ]
            lines.append(f"| {name} | {layer} | " + " | ".join("" if c is None else f"{c:.3f}" for c in cells) + " |")
    for name, table in alignment.items():
        if "teacher" in table:
            lines.append(
                f"\nTeacher map vs masks: cosine {table['teacher']['cosine_similarity']:.3f}, IoU {table['teacher']['iou_at_top_k']:.3f}."
            )
            break
    lines += [
        "",
        "![alignment and gates](alignment.png)",
        "",
        "![examples](examples.png)",
        "",
        "## The paper's numbers, for reference",
        "",
    ]
    lines += [f"- {key}: {value}" for key, value in PAPER.items()]
    (out / "report.md").write_text("\n".join(lines) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data",
        nargs="+",
        default=[str(ROOT.parent / "shared" / "data" / "emoji-shift")],
        help="one or more dataset folders; several give one folder each and a joined report",
    )
    parser.add_argument("--out", default="results/emoji-shift")
    parser.add_argument(
        "--teacher-maps", default=None, help="an interaction dataset (folder or Hub id) with precomputed maps"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--ratios", type=float, nargs="+", default=[1.0, 0.5, 0.1])
    parser.add_argument(
        "--model",
        default="hidden_size=128,num_hidden_layers=4,num_attention_heads=4,intermediate_size=256,image_size=64,patch_size=8",
    )
    parser.add_argument("--alignment-images", type=int, default=200)
    parser.add_argument(
        "--quick", action="store_true", help="256 training rows, one seed, 2 epochs, a tiny model: minutes"
    )
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.epochs, args.ratios = args.seeds[:1], 2, [1.0, 0.5]
        args.model = (
            "hidden_size=32,num_hidden_layers=2,num_attention_heads=4,intermediate_size=64,image_size=64,patch_size=8"
        )
        args.alignment_images = 32

    datasets = [Path(data) for data in args.data]
    folders = [Path(args.out) / data.name for data in datasets] if len(datasets) > 1 else [Path(args.out)]
    for data, out in zip(datasets, folders):
        reproduce_dataset(args, str(data), out)
    if len(datasets) > 1:
        joined = "\n".join((out / "report.md").read_text().replace("](", f"]({out.name}/") for out in folders)
        (Path(args.out) / "report.md").write_text(joined)
    print((Path(args.out) / "report.md").read_text())


def gate_defaults() -> str:
    """The package's default gate (what every I-ViT run here uses), for the report."""
    config, arguments = hf_lfi.IViTConfig(), hf_lfi.InteractionTrainingArguments(output_dir="unused")
    fields = ("gate_form", "gate_granularity", "gate_input_scale", "gate_init_bias", "gate_hidden_size")
    return ", ".join(f"{name}={getattr(config, name)!r}" for name in fields) + (
        f", gate_learning_rate_multiplier={arguments.gate_learning_rate_multiplier}"
    )


def reproduce_dataset(args, data: str, out: Path) -> dict:
    """Every protocol-A and protocol-B run on one dataset, the alignment and gate measurements, plots and report."""
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    runs: dict[str, list[dict]] = {}
    plan = [(seed, name) for seed in args.seeds for name in [*variants(args), "B_ivit_converted", "B_vit_continued"]]
    teacher = (
        ["--interaction_dataset", args.teacher_maps, "--teacher", "dataset"]
        if args.teacher_maps
        else ["--teacher", "mask"]
    )
    protocol_b = {"B_ivit_converted": ["--method", "ivit", *teacher], "B_vit_continued": ["--method", "vit"]}
    for number, (seed, name) in enumerate(plan, 1):
        output_dir = out / "runs" / f"{name}_seed{seed}"
        print(
            f"[{time.time() - start:6.0f}s] run {number}/{len(plan)} on {Path(data).name}: {name}, seed {seed}",
            flush=True,
        )
        if name in protocol_b:  # the protocol-A ViT of this seed, converted or continued
            flags = ["--model_name_or_path", str(out / "runs" / f"vit_seed{seed}"), *protocol_b[name]]
        else:
            flags = variants(args)[name]
        recipe.main(with_overrides(common_flags(args, data, seed, output_dir), flags))
        runs.setdefault(name, []).append(read_run(output_dir))

    test_iid = load_image_dataset(data)["test_iid"]
    seed = args.seeds[0]
    alignment = {
        name: human_alignment(
            out / "runs" / f"{name}_seed{seed}", test_iid, args.alignment_images, not args.teacher_maps
        )
        for name in ("vit", "ivit", "B_ivit_converted")
    }
    reach, best = steps_to_reach([r["curve"] for r in runs["ivit"]], [r["curve"] for r in runs["vit"]])
    summary = {
        "data": data,
        "seeds": args.seeds,
        "epochs": args.epochs,
        "model": args.model,
        "quick": args.quick,
        "teacher": f"precomputed maps of {args.teacher_maps}"
        if args.teacher_maps
        else "mask teacher (24 x 24) from the dataset's masks",
        "gate": gate_defaults(),
        "runs": runs,
        "alignment": alignment,
        "convergence": {"ivit_steps_to_vit_best": reach, "vit_best_step": best},
        "wall_time_min": (time.time() - start) / 60,
    }
    plot_convergence(runs, out / "convergence.png")
    plot_alignment(alignment, out / "alignment.png", f"I-ViT (protocol A, seed {seed}) on {Path(data).name}")
    plot_examples(out / "runs" / f"ivit_seed{seed}", test_iid, out / "examples.png")
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    write_report(summary, out)
    return summary


if __name__ == "__main__":
    sys.exit(main())
