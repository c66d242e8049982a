"""The gate study of issue 11: which gated-control-network form learns, chosen on validation accuracy only.

Every run goes through the recipe (`hf_lfi.recipe`, as `hf-lfi train`) with one fixed budget (`--steps` optimizer steps, batch 64, whatever the
data ratio), a from-scratch ViT / I-ViT (protocol A) or a trained ViT converted to I-ViT with its backbone frozen vs
the same ViT trained on (protocol B), and the mask teacher. Per run it records the split accuracies, the gradient norms of every layer's
gate parameters over training, how far the gate parameters moved, and the gates on validation images: mean and
spread over images and positions (per attention entry, per row, or per head, as the form has them).

    python benchmarks/gate_study.py --stage screen --out results/gate-study       # one seed, emoji-noshortcut
    python benchmarks/gate_study.py --stage final --out results/gate-study --variants row_b0_lr10 element_scaled_b0_lr10

Runs are independent processes (`--workers` at a time, one thread each) and each writes its own `run.json`: a
rerun skips finished runs and starts interrupted ones again (study_runs.py). `summary.json` and `report.md` hold
every table.
"""

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from study_runs import SPLITS, finished, fmt, recipe_flags, resume_flags, running_elsewhere, start_worker  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
MODEL = "hidden_size=64,num_hidden_layers=4,num_attention_heads=4,intermediate_size=128,image_size=64,patch_size=8"

# name -> (config overrides, gate learning-rate multiplier); "today" is the form before issue 11.
VARIANTS = {
    "today": ("gate_form=element,gate_input_scale=none,gate_init_bias=2", 1.0),
    "element_raw_b0_lr10": ("gate_form=element,gate_input_scale=none,gate_init_bias=0", 10.0),
    "element_scaled_b2_lr10": ("gate_form=element,gate_input_scale=num_keys,gate_init_bias=2", 10.0),
    "element_scaled_b0_lr1": ("gate_form=element,gate_input_scale=num_keys,gate_init_bias=0", 1.0),
    "element_scaled_b0_lr10": ("gate_form=element,gate_input_scale=num_keys,gate_init_bias=0", 10.0),
    "row_b0_lr10": ("gate_form=row,gate_init_bias=0", 10.0),
    "scalar_b0_lr10": ("gate_form=scalar,gate_init_bias=0", 10.0),
}


def run_flags(job: dict, out: Path, steps: int) -> list[str]:
    flags = recipe_flags(
        str(DATA / job["data"]), out / job["name"], job["seed"], steps, ratio=job["ratio"], test_splits=SPLITS[1:]
    )
    continued = ["--model_name_or_path", str(out / job["vit_dir"])] if job["protocol"] == "B" else []
    if job["variant"] == "vit":  # protocol B: the protocol-A ViT trained on for the same budget
        return [*flags, "--method", "vit", "--config_overrides", MODEL, *continued]
    overrides, multiplier = VARIANTS[job["variant"]]
    flags += ["--method", "ivit", "--teacher", "mask", "--mask_teacher_grid", "24"]
    flags += ["--gate_learning_rate_multiplier", str(multiplier)]
    # protocol B converts the protocol-A ViT of the same data and seed; only the gate fields change
    return [*flags, "--config_overrides", overrides if continued else f"{MODEL},{overrides}", *continued]


def job_list(stage: str, variants: list[str], seeds: list[int]) -> list[dict]:
    jobs = []

    def add(variant, data, ratio, seed, protocol="A"):
        name = f"{protocol}_{variant}_{data}_r{int(ratio * 100)}_s{seed}"
        vit_dir = f"A_vit_{data}_r{int(ratio * 100)}_s{seed}"
        jobs.append(
            dict(name=name, variant=variant, data=data, ratio=ratio, seed=seed, protocol=protocol, vit_dir=vit_dir)
        )

    if stage == "screen":
        for ratio in (1.0, 0.1):
            for variant in ["vit", *VARIANTS]:
                add(variant, "emoji-noshortcut", ratio, 0)
        return jobs
    for seed in seeds:  # seed by seed: an interrupted study still has every dataset and protocol at fewer seeds
        for data in ("emoji-noshortcut", "emoji-shift"):
            for ratio in (1.0, 0.1):
                for variant in ["vit", *variants]:
                    add(variant, data, ratio, seed)
            for variant in ["vit", *variants]:
                add(variant, data, 1.0, seed, protocol="B")
    return jobs


class GateGradients:
    """A `TrainerCallback` collecting, per layer, the gradient norm of its gate weights and biases at every step."""

    def __init__(self):
        from transformers import TrainerCallback

        from hf_lfi.modeling.conversion import is_gate_parameter

        self.norms: dict[str, list[float]] = {}
        recorder = self

        class Callback(TrainerCallback):
            def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
                for name, parameter in model.named_parameters():
                    if is_gate_parameter(name) and parameter.grad is not None:
                        recorder.norms.setdefault(name, []).append(parameter.grad.norm().item())

        self.callback = Callback()


def gate_statistics(model_dir: Path, data: str, num_images: int = 128) -> dict:
    """Per layer: mean and standard deviation of g1 and g2 over validation images and positions (every attention entry
    for the per-element gate, every query row for the row gate), plus the spread of the per-image mean g1."""
    import torch
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from hf_lfi.modeling.interaction_attention import GatedControlNetwork, QueryGate
    from hf_lfi.modeling.pair_gates import pair_gates
    from hf_lfi.training import load_image_dataset

    # eager: the per-element gate runs as a module on the materialised maps, where the hook below reads every entry
    model = AutoModelForImageClassification.from_pretrained(model_dir, attn_implementation="eager").eval()
    processor = AutoImageProcessor.from_pretrained(model_dir)
    rows = load_image_dataset(str(DATA / data))["validation"].select(range(num_images))
    pixel_values = processor([image.convert("RGB") for image in rows["image"]], return_tensors="pt")["pixel_values"]
    values: dict[int, tuple] = {}

    def hook(layer):
        def record(module, args, output):
            if isinstance(module, GatedControlNetwork):
                agt, vfm = args[:2]
                values[layer] = pair_gates(agt, vfm, module.pair_gate_parameters(agt.shape[-1]))
            elif isinstance(module, QueryGate):
                values[layer] = output

        return record

    handles = [layer.attention.gate.register_forward_hook(hook(i)) for i, layer in enumerate(model.vit.layers)]
    with torch.no_grad():
        outputs = model(pixel_values, output_interactions=True)
    for handle in handles:
        handle.remove()
    stats = {}
    for layer, means in enumerate(outputs.gates):  # [images, heads, 2]
        g1, g2 = values.get(layer, (means[..., :1], means[..., 1:]))
        stats[layer] = {
            "g1_mean": g1.mean().item(),
            "g1_std": g1.std().item(),
            "g2_mean": g2.mean().item(),
            "g2_std": g2.std().item(),
            "g1_std_over_images": means[..., 0].mean(1).std().item(),
            "g1_per_head": means[..., 0].mean(0).tolist(),
        }
    return stats


def gate_movement(model_dir: Path, variant: str) -> dict:
    """Per layer: how far the gate biases moved from their init (max |delta|) and the norm of the gate weights."""
    from transformers import AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(model_dir)
    moved = {}
    for i, layer in enumerate(model.vit.layers):
        gate = layer.attention.gate
        if not hasattr(gate, "bias"):
            continue
        init = gate.bias.new_tensor([-gate.init_bias, gate.init_bias])
        moved[i] = {
            "bias_max_delta": (gate.bias - init).abs().max().item(),
            "weight_norm": gate.weight.norm().item() if hasattr(gate, "weight") else None,
        }
    return moved


def run_job(job: dict, out: Path, steps: int) -> dict:
    """One run (in this process): train and evaluate through the recipe, then the gate diagnostics."""
    import torch

    from hf_lfi import recipe

    torch.set_num_threads(1)
    gradients = GateGradients()
    run_dir = out / job["name"]
    results = recipe.main(run_flags(job, out, steps) + resume_flags(run_dir), callbacks=[gradients.callback])
    record = {
        **job,
        "steps": steps,
        "accuracy": {s: results.get(f"{s}_accuracy") for s in SPLITS},
        "train_runtime": results.get("train_runtime"),
    }
    if job["variant"] != "vit":
        by_layer: dict[str, dict] = {}
        for name, norms in gradients.norms.items():
            layer = name.split("layers.")[1].split(".")[0]
            by_layer.setdefault(layer, {})[name.rsplit(".", 1)[1]] = statistics.mean(norms)
        record["gate_grad_norm"] = by_layer
        record["gate_movement"] = gate_movement(run_dir, job["variant"])
        record["gates"] = gate_statistics(run_dir, job["data"])
    return record


def launch(job: dict, out: Path, steps: int) -> dict:
    run_dir = out / job["name"]
    while job["protocol"] == "B" and finished(out / job["vit_dir"]) is None:
        time.sleep(5)  # the ViT it converts is still training in another worker
    while finished(run_dir) is None and running_elsewhere(run_dir):
        time.sleep(5)  # another invocation of this study is running it
    record = finished(run_dir)
    if record is not None:  # finished by an earlier invocation
        return record
    process = start_worker(__file__, job, run_dir, ["--out", str(out), "--steps", str(steps)])
    process.wait()
    record = finished(run_dir)
    if process.returncode != 0 or record is None:
        raise RuntimeError(f"run {job['name']} failed: see {run_dir / 'worker.log'}")
    print(
        f"done {job['name']}: validation {record['accuracy']['validation']:.3f} ({record['train_runtime']:.0f} s)",
        flush=True,
    )
    return record


def plot_gates(records: list[dict], path: Path) -> None:
    """Paper Fig. 11 per variant: g1 and g2 per layer, mean ± spread over validation images and positions, for the
    protocol-A runs of the first seed (one panel per dataset and data ratio)."""
    from matplotlib.figure import Figure

    seed = min(r["seed"] for r in records)
    panels = sorted({(r["data"], r["ratio"]) for r in records if r["protocol"] == "A"}, key=lambda k: (k[0], -k[1]))
    figure = Figure(figsize=(4.5 * len(panels), 3.8), layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for axis, (data, ratio) in zip(axes, panels):
        runs = [r for r in records if (r["data"], r["ratio"], r["protocol"], r["seed"]) == (data, ratio, "A", seed)]
        for number, r in enumerate(r for r in runs if r["variant"] != "vit"):
            layers = sorted(r["gates"], key=int)
            x = [int(layer) for layer in layers]
            for key, style in (("g1", "-"), ("g2", ":")):
                axis.errorbar(
                    x,
                    [r["gates"][layer][f"{key}_mean"] for layer in layers],
                    yerr=[r["gates"][layer][f"{key}_std"] for layer in layers],
                    linestyle=style,
                    marker="o",
                    capsize=3,
                    color=f"C{number}",
                    label=r["variant"] if key == "g1" else None,
                )
        axis.set_title(f"{data}, {ratio:g} of the data, seed {seed}", fontsize=9)
        axis.set_xlabel("layer")
        axis.xaxis.get_major_locator().set_params(integer=True)
        axis.set_ylabel("gate (g1 solid: C_AGT, g2 dotted: C_VFM)")
    axes[0].legend(fontsize=6, title="g1 solid, g2 dotted", title_fontsize=6)
    figure.savefig(path, dpi=100)


def report(records: list[dict], out: Path) -> str:
    lines = [
        "| protocol | data | ratio | variant | seeds | " + " | ".join(SPLITS) + " |",
        "|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["protocol"], r["data"], r["ratio"], r["variant"]), []).append(r)
    for (protocol, data, ratio, variant), rs in sorted(
        groups.items(), key=lambda kv: (kv[0][0], kv[0][1], -kv[0][2], kv[0][3] != "vit", kv[0][3])
    ):
        accuracies = [fmt([r["accuracy"][s] for r in rs]) for s in SPLITS]
        lines.append(f"| {protocol} | {data} | {ratio:g} | {variant} | {len(rs)} | " + " | ".join(accuracies) + " |")
    lines += [
        "",
        "Gates on validation images (first seed of each run kind; per layer g1 mean ± spread over images and "
        "positions; bias movement; mean gradient norm of the gate weight / bias):",
        "",
        "| run | layer | g1 | g2 | g1 spread over images | bias moved | weight grad | bias grad |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        if r["variant"] == "vit" or r["seed"] != min(x["seed"] for x in records):
            continue
        for layer, g in r["gates"].items():
            moved = r["gate_movement"].get(layer, {})
            grads = r["gate_grad_norm"].get(layer, {})
            cells = [
                f"{g['g1_mean']:.3f} ± {g['g1_std']:.3f}",
                f"{g['g2_mean']:.3f} ± {g['g2_std']:.3f}",
                f"{g['g1_std_over_images']:.4f}",
                f"{moved.get('bias_max_delta', 0):.3f}",
                f"{grads.get('weight', float('nan')):.2e}",
                f"{grads.get('bias', float('nan')):.2e}",
            ]
            lines.append(f"| {r['name']} | {layer} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    (out / "report.md").write_text(text + "\n![gates per layer](gates.png)\n")
    (out / "summary.json").write_text(json.dumps(records, indent=2))
    plot_gates(records, out / "gates.png")
    return text


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=["screen", "final"], default="screen")
    parser.add_argument("--out", default="results/gate-study")
    parser.add_argument("--variants", nargs="+", default=["today"], help="final stage: the variants beside the ViT")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=240)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--report-only", action="store_true", help="tables of the runs finished so far, no training")
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args()
    out = Path(args.out)
    if args.job:  # a worker process
        job = json.loads(args.job)
        record = run_job(job, out, args.steps)
        (out / job["name"] / "run.json").write_text(json.dumps(record, indent=2))
        return
    out.mkdir(parents=True, exist_ok=True)
    jobs = job_list(args.stage, args.variants, args.seeds)
    if args.report_only:
        finished = [out / j["name"] / "run.json" for j in jobs]
        print(report([json.loads(path.read_text()) for path in finished if path.exists()], out))
        return
    with ThreadPoolExecutor(args.workers) as pool:
        records = list(pool.map(lambda j: launch(j, out, args.steps), jobs))
    print(report(records, out))


if __name__ == "__main__":
    main()
