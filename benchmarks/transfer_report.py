"""The tables and figures of benchmarks/transfer_study.py, rebuilt from its finished runs (`runs/*/run.json`): budgets,
Table 1 (the pretrained protocol against fair baselines), Table 2 (data ratio), Table 3 (ablations), the alignment
weight and layers chosen on validation, the teacher-quality curve, convergence (Fig. 3), closeness to the masks
(Fig. 6) and gates (Fig. 11). Differences are paired by seed (same data subset, same evaluation images).

    python benchmarks/transfer_report.py                             # results/transfer-study: report.md, figures
    python benchmarks/transfer_report.py --out DIR --data A B ...   # another study (transfer_study.py's flags)

It trains nothing: it is `transfer_study.py --report-only`.
"""

import json
import statistics
import sys
from pathlib import Path

from matplotlib.figure import Figure
from study_runs import SPLITS, fmt, mean_std

PAPER = {
    "Table 1 (TinyImageNet, pretrained backbone frozen)": "ViT-S/16 79.94 -> I-ViT-S/16 81.52; ViT-B/16 80.24 -> "
    "82.14; ViT-L/16 87.83 -> 91.08",
    "Table 2 (TinyImageNet from scratch, ViT-L -> I-ViT-L, data 100/50/10/1 %)": "32.67 -> 34.12, 27.04 -> 29.04, "
    "12.64 -> 15.60, 2.86 -> 3.07",
    "Table 3 (ViT-L 87.8)": "IQ+GC without constraint 89.6; constraint on original queries 80.7; IQ+IC without gate "
    "90.3; full 91.1",
    "Fig. 3": "I-ViT-L reaches ViT-L's accuracy about 7x faster",
    "Fig. 6": "cosine to human masks: C_AGT > C_VLM > C_VFM",
}
LABELS = {
    "vit_scratch": "ViT from scratch",
    "ivit_scratch": "I-ViT from scratch",
    "ivit_scratch_no_alignment": "I-ViT from scratch, no alignment",
    "vit_finetune": "ViT fine-tuned",
    "vit_probe": "ViT frozen + head",
    "ivit_no_alignment": "I-ViT frozen, IQ + gate, no alignment (T3 row 2)",
    "ivit_original_queries": "I-ViT frozen, alignment on original queries (T3 row 3)",
    "ivit_no_gate": "I-ViT frozen, no gate (T3 row 4)",
    "ivit": "I-ViT frozen, full (T3 row 5; the paper's protocol)",
    "ivit_finetune": "I-ViT fine-tuned with guidance",
    "ivit_finetune_no_alignment": "I-ViT fine-tuned, no alignment",
    "ivit_weight_0.3": "I-ViT frozen, alignment weight 0.3",
    "ivit_weight_3": "I-ViT frozen, alignment weight 3",
    "ivit_last_half": "I-ViT frozen, last half of the layers aligned",
}
TABLE1 = ["vit_finetune", "vit_probe", "ivit_no_alignment", "ivit", "ivit_finetune", "ivit_finetune_no_alignment"]
FINE_TUNED = ["ivit_finetune", "ivit_finetune_no_alignment"]  # the I-ViT rows whose backbone trains
TABLE3 = ["vit_finetune", "ivit_no_alignment", "ivit_original_queries", "ivit_no_gate", "ivit"]
SELECTION = {  # row -> (alignment weight, aligned layers)
    "ivit_no_alignment": (0.0, "-"),
    "ivit_weight_0.3": (0.3, "all"),
    "ivit": (1.0, "all"),
    "ivit_weight_3": (3.0, "all"),
    "ivit_last_half": (1.0, "last half"),
}
DEGRADATIONS = {  # kind -> [(row, strength)], the oracle (strength 0) first
    "blur (cells)": [("ivit", 0.0), ("ivit_blur_1.5", 1.5), ("ivit_blur_4", 4.0)],
    "leak (share of the mass)": [("ivit", 0.0), ("ivit_leak_0.3", 0.3), ("ivit_leak_0.7", 0.7)],
    "wrong object (share of rows)": [("ivit", 0.0), ("ivit_wrong_0.5", 0.5), ("ivit_wrong_1", 1.0)],
}
TEACHER_FLAGS = {"ivit_blur_1.5": {"blur_sigma": 1.5}, "ivit_blur_4": {"blur_sigma": 4.0}}
TEACHER_FLAGS |= {"ivit_leak_0.3": {"leak": 0.3}, "ivit_leak_0.7": {"leak": 0.7}}
TEACHER_FLAGS |= {"ivit_wrong_0.5": {"wrong_object": 0.5}, "ivit_wrong_1": {"wrong_object": 1.0}, "ivit": {}}


def load_runs(out: Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted((out / "runs").glob("*/run.json"))]


class Runs:
    """The finished runs of the cells' budgets, looked up by (row, data, ratio) -> {seed: record}."""

    def __init__(self, records: list[dict], budgets: dict):
        self.by_cell: dict[tuple, dict[int, dict]] = {}
        for r in records:
            if r["row"] != "pretrain" and budgets.get((r["protocol"], r["data"], r["ratio"])) == r["steps"]:
                self.by_cell.setdefault((r["row"], r["data"], r["ratio"]), {})[r["seed"]] = r

    def get(self, row: str, data: str, ratio: float = 1.0) -> dict[int, dict]:
        return self.by_cell.get((row, data, ratio), {})

    def accuracy(self, row: str, data: str, ratio: float = 1.0, split: str = "validation") -> dict[int, float]:
        return {seed: r["accuracy"][split] for seed, r in self.get(row, data, ratio).items()}

    def paired(self, row: str, base: str, data: str, ratio: float = 1.0, split: str = "validation") -> list[float]:
        a, b = self.accuracy(row, data, ratio, split), self.accuracy(base, data, ratio, split)
        return [a[s] - b[s] for s in sorted(set(a) & set(b)) if a[s] is not None and b[s] is not None]


def delta(values: list[float]) -> str:
    mean, std = mean_std(values)
    return "n/a" if mean is None else f"{mean:+.3f} ± {std:.3f} (n={len(values)})"


def helps(values: list[float]) -> bool:
    """A paired validation gain larger than its spread over seeds (and measured on at least 2 seeds)."""
    mean, std = mean_std(values)
    return mean is not None and len(values) >= 2 and mean > 0 and mean > std


def budget_table(study, records: list[dict]) -> tuple[list[str], dict]:
    budgets, lines = {}, ["| protocol | data | ratio | ladder (steps: ViT seed-0 validation) | chance | budget |"]
    lines.append("|---|---|---|---|---|---|")
    cells = sorted({(r["protocol"], r["data"], r["ratio"]) for r in records if r["row"] != "pretrain"})
    for protocol, data, ratio in cells:
        steps, probe = study.budget(protocol, data, ratio)
        budgets[(protocol, data, ratio)] = steps
        probes = sorted(
            (r["steps"], r["accuracy"]["validation"])
            for r in records
            if (r["protocol"], r["data"], r["ratio"], r["seed"]) == (protocol, data, ratio, study.args.seeds[0])
            and r["row"] == ("vit_finetune" if protocol == "pretrained" else "vit_scratch")
        )
        ladder = ", ".join(f"{s}: {a:.3f}" for s, a in probes)
        chosen = steps or (
            f"pending ({probe['steps']} steps next)" if probe else "none reaches 2x chance: not compared"
        )
        lines.append(
            f"| {protocol} | {Path(data).name} | {ratio:g} | {ladder} | {study.chance[data]:.3f} | {chosen} |"
        )
    return lines, budgets


def accuracy_table(runs: Runs, rows: list[str], data: str, ratio: float, bases: list[str]) -> list[str]:
    header = "| row | seeds | trainable params | " + " | ".join(SPLITS) + "".join(f" | Δ val vs {b}" for b in bases)
    lines = [header + " |", "|---" * (4 + len(SPLITS) - 1 + len(bases)) + "|"]
    for row in rows:
        seeds = runs.get(row, data, ratio)
        if not seeds:
            continue
        params = next(iter(seeds.values()))["trainable_parameters"]
        cells = [fmt([r["accuracy"][s] for r in seeds.values()]) for s in SPLITS]
        cells += [delta(runs.paired(row, b, data, ratio)) if row != b else "–" for b in bases]
        lines.append(f"| {LABELS.get(row, row)} | {len(seeds)} | {params:,} | " + " | ".join(cells) + " |")
    return lines


def steps_to_reach(runs: Runs, row: str, base: str, data: str, ratio: float = 1.0) -> tuple[float | None, int]:
    """Mean over seeds of the first evaluated step at which `row` reaches the final validation accuracy of `base`
    (same seed), and on how many seeds it does."""
    reached = []
    targets = runs.get(base, data, ratio)
    for seed, record in runs.get(row, data, ratio).items():
        if seed in targets and targets[seed]["curve"]:
            final = targets[seed]["curve"][-1][1]
            reached += [next((step for step, accuracy in record["curve"] if accuracy >= final), None)]
    hits = [r for r in reached if r is not None]
    return (statistics.mean(hits) if hits else None), len(hits)


def plot_convergence(runs: Runs, datas: list[str], rows: list[str], path: Path) -> None:
    figure = Figure(figsize=(5 * len(datas), 4), layout="constrained")
    for axis, data in zip(figure.subplots(1, len(datas), squeeze=False)[0], datas):
        for row in rows:
            curves = [r["curve"] for r in runs.get(row, data).values() if r["curve"]]
            if not curves:
                continue
            length = min(len(c) for c in curves)
            axis.plot(
                [c[0] for c in curves[0][:length]],
                [statistics.mean(c[i][1] for c in curves) for i in range(length)],
                marker="o",
                markersize=3,
                label=LABELS.get(row, row),
            )
        axis.set_title(f"{Path(data).name} (mean over seeds)", fontsize=9)
        axis.set_xlabel("optimizer step")
        axis.set_ylabel("validation accuracy")
        if axis.lines:
            axis.legend(fontsize=6)
    figure.savefig(path, dpi=100)


def teacher_quality(data: str, num_images: int = 200) -> dict[str, float]:
    """Cosine similarity of each degraded mask teacher's maps to the masks (validation images)."""
    import numpy as np

    from hf_lfi import metrics
    from hf_lfi.interactions import MaskInteractionMapFn
    from hf_lfi.training import load_image_dataset

    rows = load_image_dataset(data)["validation"]
    rows = rows.select(range(min(num_images, len(rows))))
    masks = [np.array(mask) for mask in rows["mask"]]
    alignment = metrics.load("interaction_alignment")
    quality = {}
    for row, settings in TEACHER_FLAGS.items():
        maps = MaskInteractionMapFn(grid=(24, 24), **settings)({"mask": masks})["interaction_map"]
        score = alignment.compute(predictions=[m.astype(np.float32) for m in maps], references=masks)
        quality[row] = score["cosine_similarity"]
    return quality


def plot_teacher(curves: dict, path: Path) -> None:
    figure = Figure(figsize=(5 * len(curves), 4), layout="constrained")
    for axis, (data, kinds) in zip(figure.subplots(1, len(curves), squeeze=False)[0], curves.items()):
        for kind, points in kinds["curves"].items():
            axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=kind)
        axis.axhline(kinds["no_alignment"], linestyle="--", color="gray", label="no alignment")
        axis.axhline(kinds["probe"], linestyle=":", color="black", label="ViT frozen + head")
        axis.set_title(f"{Path(data).name}, seed {kinds['seed']}", fontsize=9)
        axis.set_xlabel("teacher map's cosine similarity to the masks")
        axis.set_ylabel("validation accuracy")
        axis.legend(fontsize=6)
    figure.savefig(path, dpi=100)


def plot_alignment(alignment: dict, path: Path, title: str) -> None:
    """Cosine to the masks per layer (Fig. 6: C_AGT and C_VFM of the I-ViT, the ViT's own attention, the teacher) and
    the gates per layer (Fig. 11: g1 and g2, mean ± std over images and heads)."""
    figure = Figure(figsize=(9, 3.5), layout="constrained")
    figure.suptitle(title, fontsize=9)
    cosine_axis, gate_axis = figure.subplots(1, 2)
    ivit, vit = alignment["ivit"]["layers"], alignment["vit_finetune"]["layers"]
    for name, table, key in (("I-ViT C_AGT", ivit, "C_AGT"), ("I-ViT C_VFM", ivit, "C_VFM"), ("ViT", vit, "C_VFM")):
        layers = sorted(table, key=int)
        cosine_axis.plot(
            [int(layer) for layer in layers],
            [table[layer][key]["cosine_similarity"] for layer in layers],
            marker="o",
            label=name,
        )
    if "teacher" in alignment["ivit"]:
        teacher = alignment["ivit"]["teacher"]["cosine_similarity"]
        cosine_axis.axhline(teacher, linestyle="--", color="gray", label="teacher")
    cosine_axis.set_xlabel("layer")
    cosine_axis.set_ylabel("cosine to the masks")
    cosine_axis.legend(fontsize=7)
    layers = sorted(ivit, key=int)
    for key, label in (("g1", "g1 (C_AGT)"), ("g2", "g2 (C_VFM)")):
        gate_axis.errorbar(
            [int(layer) for layer in layers],
            [ivit[layer]["gates"][key] for layer in layers],
            yerr=[ivit[layer]["gates"][f"{key}_std"] for layer in layers],
            marker="o",
            capsize=3,
            label=label,
        )
    gate_axis.set_xlabel("layer")
    gate_axis.set_ylabel("mean gate")
    gate_axis.legend(fontsize=7)
    for axis in (cosine_axis, gate_axis):
        axis.xaxis.get_major_locator().set_params(integer=True)
    figure.savefig(path, dpi=100)


def plot_examples(model_dir: Path, data: str, path: Path, num_images: int = 6) -> None:
    """Validation images with their mask, the mask teacher's map and the I-ViT's last-layer C_VFM and C_AGT."""
    import numpy as np
    import torch
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from hf_lfi.interactions import mask_to_interaction_map, plot_interaction_maps
    from hf_lfi.training import load_image_dataset

    model = AutoModelForImageClassification.from_pretrained(model_dir).eval()
    processor = AutoImageProcessor.from_pretrained(model_dir)
    rows = load_image_dataset(data)["validation"].select(range(num_images))
    images = [image.convert("RGB") for image in rows["image"]]
    maps = {}
    with torch.no_grad():
        pixel_values = processor(images, return_tensors="pt")["pixel_values"]
        for source in ("original", "interaction"):
            model.config.student_map_source = source
            maps[source] = model(pixel_values, output_interactions=True).interaction_maps[-1]
    masks = [np.array(mask) for mask in rows["mask"]]
    shown = [
        [mask > 0, mask_to_interaction_map(mask, (24, 24)).numpy(), vfm.numpy(), agt.numpy()]
        for mask, vfm, agt in zip(masks, maps["original"], maps["interaction"])
    ]
    titles = ["mask", "mask teacher", "C_VFM (last layer)", "C_AGT (last layer)"]
    plot_interaction_maps(images, shown, titles=titles, path=path)


def alignment_table(runs: Runs, data: str, seed: int, rows: list[str]) -> list[str]:
    lines = [
        "| row | layer | C_VFM cosine | C_AGT cosine | g1 (C_AGT) | g2 (C_VFM) |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        record = runs.get(row, data).get(seed)
        if record is None or "alignment" not in record:
            continue
        for layer, entry in record["alignment"]["layers"].items():
            vfm, agt, gates = entry.get("C_VFM", {}), entry.get("C_AGT", {}), entry.get("gates", {})
            cells = [vfm.get("cosine_similarity"), agt.get("cosine_similarity"), gates.get("g1"), gates.get("g2")]
            cells = ["" if c is None else f"{c:.3f}" for c in cells]
            lines.append(f"| {LABELS.get(row, row)} | {layer} | " + " | ".join(cells) + " |")
    return lines


def backbone_table(records: list[dict], datas: list[str], chosen: int) -> list[str]:
    """Validation accuracy of the pretrained rows on every backbone that has runs (its pretraining steps and own
    validation accuracy), the differences paired by seed against the chosen backbone."""
    pretrains = {r["steps"]: r for r in records if r["row"] == "pretrain"}
    rows = ["vit_probe", "vit_finetune", "ivit_no_alignment", "ivit"]
    cells: dict[tuple, dict[int, float]] = {}
    for r in records:
        if r["protocol"] == "pretrained" and r["ratio"] == 1.0 and r["row"] in rows:
            key = (r.get("backbone_steps"), r["row"], r["data"], r["steps"])
            cells.setdefault(key, {})[r["seed"]] = r["accuracy"]["validation"]
    lines = [
        "| backbone (pretraining steps: its validation) | data | row | steps | validation | Δ vs chosen backbone |"
    ]
    lines.append("|---|---|---|---|---|---|")
    for backbone, row, data, steps in sorted(cells, key=lambda k: (Path(k[2]).name, rows.index(k[1]), k[0])):
        if data not in datas:
            continue
        values, chosen_values = cells[(backbone, row, data, steps)], cells.get((chosen, row, data, steps), {})
        paired = [values[s] - chosen_values[s] for s in sorted(set(values) & set(chosen_values))]
        own = pretrains.get(backbone)
        label = f"{backbone}: {own['accuracy']['validation']:.3f}" if own else str(backbone)
        difference = "–" if backbone == chosen else delta(paired)
        lines.append(
            f"| {label} | {Path(data).name} | {LABELS[row]} | {steps} | {fmt(list(values.values()))} | {difference} |"
        )
    return lines


def write_report(study) -> str:
    out, args = study.out, study.args
    every_record = load_runs(out)
    records = [  # the pretrained rows on the study's backbone
        r
        for r in every_record
        if (r["protocol"] != "pretrained" or r.get("backbone_steps") == study.pretrain_steps)
        and (r["row"] != "pretrain" or r["steps"] == study.pretrain_steps)
    ]
    budget_lines, budgets = budget_table(study, records)
    runs = Runs(records, budgets)
    datas = args.data
    pretrain = next((r for r in records if r["row"] == "pretrain"), None)
    lines = [
        "# Does LFI transfer? (benchmarks/transfer_study.py)",
        "",
        *(
            [
                "**Quick mode: a smoke test (256 training / 64 evaluation rows, a tiny model, a few steps). Its numbers "
                "say that the pipeline runs, not how LFI compares.**",
                "",
            ]
            if args.quick
            else []
        ),
        f"Data: {', '.join(Path(d).name for d in datas)}. Seeds {args.seeds}. Model `{study.model}`. Teacher: "
        + (f"precomputed maps of `{args.teacher_maps}`" if args.teacher_maps else "mask teacher (24 x 24)")
        + ". Every choice below is made on validation accuracy; test splits are reported, never used to choose.",
        "",
        "Pretrained backbone: "
        + (
            f"ViT trained {pretrain['steps']} steps on `{Path(pretrain['data']).name}`, validation accuracy "
            f"{pretrain['accuracy']['validation']:.3f}."
            if pretrain
            else "not trained yet."
        ),
        "",
        "## Budgets (the first ladder rung where the ViT reaches twice chance on validation)",
        "",
        *budget_lines,
    ]
    if len({r.get("backbone_steps") for r in every_record if r["protocol"] == "pretrained"}) > 1:
        lines += ["", "## Backbone strength (pretrained rows, 100 % of the data, validation)", ""]
        lines += backbone_table(every_record, datas, study.pretrain_steps)
    verdicts = []
    for data in datas:
        name = Path(data).name
        lines += ["", f"## Table 1 analogue: `{name}`, the pretrained protocol, 100 % of the data", ""]
        lines += accuracy_table(runs, TABLE1, data, 1.0, ["vit_finetune", "vit_probe", "ivit_no_alignment"])
        lines += ["", f"From scratch (`{name}`, 100 % of the data):", ""]
        lines += accuracy_table(
            runs, ["vit_scratch", "ivit_scratch", "ivit_scratch_no_alignment"], data, 1.0, ["vit_scratch"]
        )
        for row, base in (("ivit", "vit_finetune"), ("ivit", "vit_probe"), ("ivit", "ivit_no_alignment")):
            verdicts.append((name, row, base, runs.paired(row, base, data)))
        for row, base in (("ivit_finetune", "vit_finetune"), ("ivit_scratch", "vit_scratch")):
            verdicts.append((name, row, base, runs.paired(row, base, data)))
    lines += ["", "## Table 2 analogue: data ratio (validation; paired Δ against the ViT of the same protocol)", ""]
    lines += [
        "| data | ratio | protocol | ViT | I-ViT | Δ I-ViT − ViT | I-ViT, no alignment | ViT frozen + head "
        "| I-ViT fine-tuned | Δ I-ViT fine-tuned − ViT | I-ViT fine-tuned, no alignment |"
    ]
    lines += ["|---|---|---|---|---|---|---|---|---|---|---|"]
    for data in datas:
        for ratio in args.ratios:
            for protocol, vit, ivit, unaligned in (
                ("pretrained", "vit_finetune", "ivit", "ivit_no_alignment"),
                ("scratch", "vit_scratch", "ivit_scratch", "ivit_scratch_no_alignment"),
            ):
                if not runs.get(vit, data, ratio):
                    continue
                extra = ["", "", "", ""]
                if protocol == "pretrained":
                    probe, guided, unguided = (
                        fmt(list(runs.accuracy(r, data, ratio).values()))
                        for r in ("vit_probe", "ivit_finetune", "ivit_finetune_no_alignment")
                    )
                    extra = [probe, guided, delta(runs.paired("ivit_finetune", vit, data, ratio)), unguided]
                cells = [
                    fmt(list(runs.accuracy(vit, data, ratio).values())),
                    fmt(list(runs.accuracy(ivit, data, ratio).values())),
                ]
                cells += [delta(runs.paired(ivit, vit, data, ratio))]
                cells += [fmt(list(runs.accuracy(unaligned, data, ratio).values())), *extra]
                lines.append(f"| {Path(data).name} | {ratio:g} | {protocol} | " + " | ".join(cells) + " |")
                if ratio < 1:
                    verdicts.append(
                        (f"{Path(data).name} at {ratio:g}", ivit, vit, runs.paired(ivit, vit, data, ratio))
                    )
    for data in datas:
        lines += ["", f"## Table 3 analogue: `{Path(data).name}`, pretrained, backbone frozen (Δ against row 2)", ""]
        lines += accuracy_table(runs, TABLE3, data, 1.0, ["ivit_no_alignment", "vit_finetune"])

    lines += ["", "## Alignment weight and aligned layers (frozen I-ViT, validation accuracy)", ""]
    lines += [
        "| weight | layers | " + " | ".join(Path(d).name for d in datas) + " | mean over data | seeds per data |"
    ]
    lines += ["|---|---|" + "---|" * len(datas) + "---|---|"]
    selection = {}  # the settings measured on every data set: (mean over data, seeds)
    for row, (weight, layers) in SELECTION.items():
        per_data = [mean_std(list(runs.accuracy(row, d).values()))[0] for d in datas]
        if all(value is None for value in per_data):
            continue
        seeds = [len(runs.get(row, d)) for d in datas]
        mean = "pending" if None in per_data else f"{statistics.mean(per_data):.3f}"
        if None not in per_data:
            selection[row] = (statistics.mean(per_data), min(seeds))
        cells = " | ".join(fmt(list(runs.accuracy(row, d).values())) for d in datas)
        lines.append(f"| {weight:g} | {layers} | {cells} | {mean} | {' / '.join(map(str, seeds))} |")
    aligned = {row: v for row, v in selection.items() if row != "ivit_no_alignment"}
    chosen = max(aligned, key=lambda row: aligned[row][0]) if aligned else None
    if chosen:
        lines += [
            "",
            f"Chosen on validation (best mean over the data sets among the aligned settings): **{LABELS[chosen]}**. "
            f"Without alignment (weight 0): {selection.get('ivit_no_alignment', (float('nan'),))[0]:.3f}.",
        ]
        if chosen != "ivit":  # the full I-ViT against no alignment is a verdict already
            for data in datas:
                verdicts.append(
                    (Path(data).name, chosen, "ivit_no_alignment", runs.paired(chosen, "ivit_no_alignment", data))
                )

    lines += ["", "## Teacher quality (frozen I-ViT, first seed; validation accuracy)", ""]
    curves = {}
    for data in datas:
        seed = args.seeds[0]
        if not runs.get("ivit", data).get(seed):
            continue
        quality = teacher_quality(data)
        lines += [f"`{Path(data).name}` (teacher cosine to the masks -> validation accuracy):", ""]
        lines += ["| degradation | strength | teacher cosine | validation |", "|---|---|---|---|"]
        kinds = {}
        for kind, points in DEGRADATIONS.items():
            curve = []
            for row, strength in points:
                record = runs.get(row, data).get(seed)
                if record is not None:
                    curve.append((quality[row], record["accuracy"]["validation"]))
                    lines.append(
                        f"| {kind} | {strength:g} | {quality[row]:.3f} | {record['accuracy']['validation']:.3f} |"
                    )
            kinds[kind] = curve
        reference = {
            key: runs.get(row, data).get(seed)
            for key, row in (("no_alignment", "ivit_no_alignment"), ("probe", "vit_probe"))
        }
        lines += [
            f"| none (weight 0) | – | – | {reference['no_alignment']['accuracy']['validation']:.3f} |"
            if reference["no_alignment"]
            else "",
            "",
        ]
        if all(reference.values()):
            curves[data] = {
                "curves": kinds,
                "seed": seed,
                **{key: record["accuracy"]["validation"] for key, record in reference.items()},
            }
    if curves:
        plot_teacher(curves, out / "teacher_quality.png")
        lines += ["![teacher quality](teacher_quality.png)", ""]

    lines += ["## Convergence (Fig. 3 analogue; validation every fifth of the budget)", ""]
    convergence_rows = ["vit_finetune", "vit_probe", "ivit_no_alignment", "ivit", "ivit_finetune"]
    plot_convergence(runs, datas, convergence_rows, out / "convergence.png")
    lines += ["![convergence](convergence.png)", ""]
    lines += [
        "| data | row | steps to the fine-tuned ViT's final validation accuracy (mean over the seeds that reach it) |"
    ]
    lines += ["|---|---|---|"]
    for data in datas:
        for row in [*convergence_rows, "vit_scratch", "ivit_scratch"]:
            base = "vit_scratch" if "scratch" in row else "vit_finetune"
            if not runs.get(row, data):
                continue
            steps, hits = steps_to_reach(runs, row, base, data)
            total = len(runs.get(row, data))
            text = f"{steps:.0f} ({hits}/{total} seeds)" if steps is not None else f"never (0/{total} seeds)"
            lines.append(f"| {Path(data).name} | {LABELS[row]} (vs {LABELS[base]}) | {text} |")

    lines += [
        "",
        "## Closeness to the masks and gates per layer (Fig. 6 / Fig. 11 analogues; validation, first seed)",
        "",
    ]
    for data in datas:
        lines += [f"`{Path(data).name}`:", ""]
        lines += alignment_table(
            runs, data, args.seeds[0], ["vit_finetune", "ivit_no_alignment", "ivit", "ivit_finetune"]
        )
        lines += [""]

    seed = args.seeds[0]
    for data in datas:
        shown = {row: runs.get(row, data).get(seed) for row in ("vit_finetune", "ivit")}
        if all(record and "alignment" in record for record in shown.values()):
            name = Path(data).name
            plot_alignment(
                {row: record["alignment"] for row, record in shown.items()},
                out / f"alignment_{name}.png",
                f"{name}: the frozen I-ViT and the fine-tuned ViT, seed {seed}",
            )
            plot_examples(out / "runs" / shown["ivit"]["name"], data, out / f"examples_{name}.png")
            lines += [f"![alignment and gates, {name}](alignment_{name}.png)", ""]
            lines += [f"![teacher and student maps, {name}](examples_{name}.png)", ""]

    lines += ["## Best on validation (pretrained protocol, 100 % of the data, mean over seeds)", ""]
    lines += [
        "| data | best row | validation | best row with the backbone frozen | validation |",
        "|---|---|---|---|---|",
    ]
    for data in datas:
        means = {row: mean_std(list(runs.accuracy(row, data).values()))[0] for row in [*TABLE1, *TABLE3, *SELECTION]}
        means = {row: value for row, value in means.items() if value is not None}
        frozen = {row: value for row, value in means.items() if row not in ("vit_finetune", *FINE_TUNED)}
        if means:
            best, best_frozen = max(means, key=means.get), max(frozen, key=frozen.get, default=None)
            cells = [LABELS[best], f"{means[best]:.3f}"]
            cells += [LABELS[best_frozen], f"{frozen[best_frozen]:.3f}"] if best_frozen else ["", ""]
            lines.append(f"| {Path(data).name} | " + " | ".join(cells) + " |")
    lines += ["", "## Where LFI helps on validation (paired gain > 0 and larger than its spread over seeds)", ""]
    lines += ["| data | row | against | Δ validation | helps |", "|---|---|---|---|---|"]
    for name, row, base, values in verdicts:
        if values:
            lines.append(
                f"| {name} | {LABELS[row]} | {LABELS[base]} | {delta(values)} | {'yes' if helps(values) else 'no'} |"
            )
    lines += ["", "## The paper's numbers, for reference", ""]
    lines += [f"- {key}: {value}" for key, value in PAPER.items()]
    text = "\n".join(lines) + "\n"
    (out / "report.md").write_text(text)
    (out / "summary.json").write_text(
        json.dumps({"budgets": {str(k): v for k, v in budgets.items()}, "runs": records}, indent=2)
    )
    return text


def main(argv: list[str] | None = None) -> str:
    """Rebuild report.md and the figures of a transfer study's finished runs; returns the report's text."""
    import transfer_study

    return transfer_study.main([*(sys.argv[1:] if argv is None else argv), "--report-only"])


if __name__ == "__main__":
    main()
