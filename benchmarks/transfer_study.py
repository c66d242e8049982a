"""Does LFI transfer? Fair baselines, the paper's pretrained protocol, the alignment's strength and the teacher's
quality, at budgets where the baselines learn; every choice on validation accuracy, never on a test split.

    python benchmarks/build_pretraining_set.py --emoji-root package --out data/emoji-pretrain \\
        --exclude-objects-of ../shared/data/emoji-shift ../shared/data/emoji-noshortcut
    python benchmarks/transfer_study.py --data ../shared/data/emoji-shift ../shared/data/emoji-noshortcut \\
        --pretrain-data data/emoji-pretrain --out results/transfer-study          # trains what is missing, then tables
    python benchmarks/transfer_report.py --out results/transfer-study            # tables of the finished runs only

Protocols (one model: ViT 4 layers, width 64, 4 heads, patch 8, 64 px; batch 64, AdamW lr 1e-3, cosine, the
package's default gate; the mask teacher, 24 x 24, from each dataset's masks):
- `pretrained` (the paper's: Table 1, Fig. 3): a ViT pretrained on `--pretrain-data` (other objects, other labels,
  other backgrounds; see build_pretraining_set.py), then on the target: ViT fine-tuned; ViT frozen + head (linear
  probe); I-ViT converted with its backbone frozen, as the paper, in the Table 3 rows (interaction queries + gate
  without alignment, alignment on the original queries, no gate, full); I-ViT with its backbone trainable ("fine-tune
  with guidance") with and without alignment; the alignment weight (0.3, 1, 3) and the aligned layers (all, last
  half) of the frozen I-ViT; the teacher degraded (blurred, leaking to the background, pointing at another row's
  object).
- `scratch` (paper Table 2): ViT, I-ViT and I-ViT without alignment from random weights.

Budget: for every (protocol, dataset, data ratio) cell, the first of `--ladder` optimizer steps at which the ViT
(seed 0; fine-tuned, or from scratch) reaches at least twice chance on validation; every run of the cell uses it, and
a cell whose ViT never does is reported and not compared. Each run evaluates validation five times (the convergence
curves) and the test splits once at the end.

Runs are separate processes (`--workers` at a time, one thread each, under the caller's `nice`), started in a fixed
priority order (`plan`: the frozen and fine-tuned comparison of the first seed, the frozen one of the second, then
the alignment settings, so an interrupted study still answers the main question); each writes
`runs/NAME/run.json` when it ends, and a rerun skips the finished ones and resumes an interrupted one from its newest
checkpoint (study_runs.py). Training goes through `hf_lfi.recipe.main`, the recipe `hf-lfi train` runs. A pretrained
run's name ends with its backbone's (`__b800`: the backbone pretrained 800 steps, the default), so runs on backbones of
other strengths (`--pretrain-steps`) stay side by side; the report compares them on validation.
"""

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from study_runs import (  # noqa: E402
    SPLITS,
    finished,
    human_alignment,
    read_run,
    recipe_flags,
    resume_flags,
    running_elsewhere,
    start_worker,
)

MODEL = "hidden_size=64,num_hidden_layers=4,num_attention_heads=4,intermediate_size=128,image_size=64,patch_size=8"
QUICK_MODEL = (
    "hidden_size=32,num_hidden_layers=2,num_attention_heads=2,intermediate_size=64,image_size=32,patch_size=8"
)
EVALUATIONS = 5  # validation passes per run (the convergence curves), each with a checkpoint to resume from
TEACHER = "TEACHER"  # in a row's flags: the mask teacher (24 x 24), or the maps of --teacher-maps
LAST_HALF = "LAST_HALF"  # in a row's flags: the indices of the model's last half of layers

# row -> (protocol, recipe flags beside the common ones, config overrides); "pretrained" rows start from the
# pretrained ViT (a converted I-ViT freezes its backbone unless the row says otherwise)
ROWS = {
    "vit_finetune": ("pretrained", ["--method", "vit"], ""),
    "vit_probe": ("pretrained", ["--method", "vit", "--freeze_backbone", "true"], ""),
    "ivit_no_alignment": ("pretrained", ["--method", "ivit", "--alignment_weight", "0"], ""),
    "ivit_original_queries": ("pretrained", ["--method", "ivit", TEACHER], "student_map_source=original"),
    "ivit_no_gate": ("pretrained", ["--method", "ivit", TEACHER], "gate_granularity=none"),
    "ivit": ("pretrained", ["--method", "ivit", TEACHER], ""),
    "ivit_finetune": ("pretrained", ["--method", "ivit", TEACHER, "--freeze_backbone", "false"], ""),
    "ivit_finetune_no_alignment": (
        "pretrained",
        ["--method", "ivit", "--alignment_weight", "0", "--freeze_backbone", "false"],
        "",
    ),
    "ivit_weight_0.3": ("pretrained", ["--method", "ivit", TEACHER, "--alignment_weight", "0.3"], ""),
    "ivit_weight_3": ("pretrained", ["--method", "ivit", TEACHER, "--alignment_weight", "3"], ""),
    "ivit_last_half": ("pretrained", ["--method", "ivit", TEACHER, "--alignment_layers", LAST_HALF], ""),
    "ivit_blur_1.5": ("pretrained", ["--method", "ivit", TEACHER, "--mask_teacher_blur", "1.5"], ""),
    "ivit_blur_4": ("pretrained", ["--method", "ivit", TEACHER, "--mask_teacher_blur", "4"], ""),
    "ivit_leak_0.3": ("pretrained", ["--method", "ivit", TEACHER, "--mask_teacher_leak", "0.3"], ""),
    "ivit_leak_0.7": ("pretrained", ["--method", "ivit", TEACHER, "--mask_teacher_leak", "0.7"], ""),
    "ivit_wrong_0.5": ("pretrained", ["--method", "ivit", TEACHER, "--mask_teacher_wrong", "0.5"], ""),
    "ivit_wrong_1": ("pretrained", ["--method", "ivit", TEACHER, "--mask_teacher_wrong", "1"], ""),
    "vit_scratch": ("scratch", ["--method", "vit"], ""),
    "ivit_scratch": ("scratch", ["--method", "ivit", TEACHER], ""),
    "ivit_scratch_no_alignment": ("scratch", ["--method", "ivit", "--alignment_weight", "0"], ""),
}
BUDGET_ROW = {"pretrained": "vit_finetune", "scratch": "vit_scratch"}
MAIN_ROWS = ["ivit", "ivit_no_alignment", "vit_finetune", "vit_probe", "ivit_finetune"]
ABLATION_ROWS = ["ivit_original_queries", "ivit_no_gate"]
SCRATCH_ROWS = ["vit_scratch", "ivit_scratch"]
SELECTION_ROWS = ["ivit_weight_0.3", "ivit_weight_3", "ivit_last_half"]
TEACHER_ROWS = ["ivit_blur_1.5", "ivit_blur_4", "ivit_leak_0.3", "ivit_leak_0.7", "ivit_wrong_0.5", "ivit_wrong_1"]
LOW_DATA_ROWS = ["vit_finetune", "vit_probe", "ivit", "ivit_finetune", "vit_scratch", "ivit_scratch"]
LATE_ROWS = ["ivit_finetune_no_alignment", "ivit_scratch_no_alignment"]
LATE_LOW_DATA_ROWS = LATE_ROWS  # at 10 % too: is it the alignment that helps the I-ViT there?


def train(flags: list[str], callbacks=()) -> dict:
    """Train and evaluate one run through the recipe (`hf_lfi.recipe.main`, what `hf-lfi train` runs); returns its
    metrics."""
    from hf_lfi import recipe

    return recipe.main(flags, callbacks=list(callbacks))


def pretrain_name(steps: int) -> str:
    return f"pretrain__n{steps}"


def job_name(row: str, data: str, ratio: float, seed: int, steps: int, backbone_steps: int | None = None) -> str:
    """A run's folder name; a pretrained run's ends with its backbone's pretraining steps."""
    backbone = f"__b{backbone_steps}" if backbone_steps is not None else ""
    return f"{row}__{Path(data).name}__r{ratio:g}__s{seed}__n{steps}{backbone}"


def run_flags(job: dict, out: Path, quick: bool) -> list[str]:
    """Recipe flags of one job: the common ones, the row's, its starting point and its config overrides."""
    model = QUICK_MODEL if quick else MODEL
    steps = job["steps"]
    flags = recipe_flags(
        job["data"],
        out / "runs" / job["name"],
        job["seed"],
        steps,
        ratio=job["ratio"],
        warmup=min(100, steps // 10),
        evaluations=EVALUATIONS,
        test_splits=job["test_splits"],
    )
    if quick:
        flags += ["--max_train_samples", "256", "--max_eval_samples", "64"]
    if job["row"] == "pretrain":
        return [*flags, "--method", "vit", "--config_overrides", model]
    protocol, row_flags, overrides = ROWS[job["row"]]
    num_layers = int(model.split("num_hidden_layers=")[1].split(",")[0])
    maps = job.get("teacher_maps")
    expanded = {
        LAST_HALF: [str(i) for i in range(num_layers // 2, num_layers)],
        TEACHER: ["--teacher", "mask", "--mask_teacher_grid", "24"]
        if maps is None
        else ["--teacher", "dataset", "--interaction_dataset", maps],
    }
    row_flags = [flag for value in row_flags for flag in expanded.get(value, [value])]
    if protocol == "pretrained":  # the converted or fine-tuned model takes its sizes from the checkpoint
        flags += ["--model_name_or_path", str(out / "runs" / pretrain_name(job["backbone_steps"]))]
    else:
        overrides = ",".join(filter(None, [model, overrides]))
    return [*flags, *row_flags, *(["--config_overrides", overrides] if overrides else [])]


class TrainableParameters:
    """A `TrainerCallback` recording how many parameters the run trains."""

    def __init__(self):
        from transformers import TrainerCallback

        self.count = None
        recorder = self

        class Callback(TrainerCallback):
            def on_train_begin(self, args, state, control, model=None, **kwargs):
                recorder.count = sum(p.numel() for p in model.parameters() if p.requires_grad)

        self.callback = Callback()


def run_job(job: dict, out: Path, quick: bool) -> dict:
    """One run in this process: train through the recipe (resuming an interrupted run), then its curves, the
    closeness of its attention to the masks and its gates per layer (validation images)."""
    import torch

    from hf_lfi.training import load_image_dataset

    torch.set_num_threads(1)
    run_dir = out / "runs" / job["name"]
    trainable = TrainableParameters()
    train(run_flags(job, out, quick) + resume_flags(run_dir), callbacks=[trainable.callback])
    record = {**job, **read_run(run_dir), "trainable_parameters": trainable.count}
    results = json.loads((run_dir / "all_results.json").read_text())
    record["train_metrics"] = {
        k: v for k, v in results.items() if k.startswith(("alignment_loss", "task_loss", "gate_"))
    }
    if job["row"] != "pretrain":
        validation = load_image_dataset(job["data"])["validation"]
        record["alignment"] = human_alignment(
            run_dir, validation, 64 if quick else 200, mask_teacher=job.get("teacher_maps") is None
        )
    return record


def plan(args) -> list[tuple]:
    """The runs in priority order, as (row, data, ratio, seed) cells; the steps come from each cell's budget. Only
    the rows of `args.rows`; with precomputed teacher maps, no degraded mask teacher."""
    first, *others = args.seeds
    rows = [r for r in args.rows if not (args.teacher_maps and r in TEACHER_ROWS)]

    def cells(chosen, seeds, ratios=(1.0,)):
        chosen = [row for row in chosen if row in rows]
        return [(row, data, ratio, seed) for seed in seeds for ratio in ratios for row in chosen for data in args.data]

    main, guided = MAIN_ROWS[:-1], MAIN_ROWS[-1:]  # the frozen rows, then the fine-tuned I-ViT, seed by seed
    order = cells(main, [first]) + cells(guided, [first]) + cells(main, others[:1]) + cells(SELECTION_ROWS, [first])
    order += cells(main, others[1:]) + cells(guided, others) + cells(TEACHER_ROWS + ABLATION_ROWS, [first])
    order += cells(SCRATCH_ROWS, args.seeds) + cells(SELECTION_ROWS + ABLATION_ROWS, others)
    low = [ratio for ratio in args.ratios if ratio < 1]
    order += cells(LOW_DATA_ROWS, args.seeds, low) + cells(LATE_ROWS, args.seeds)
    order += cells(LATE_LOW_DATA_ROWS, args.seeds, low) + cells(TEACHER_ROWS, others)
    return order


class Study:
    """The scheduler: starts the first ready run in priority order while fewer than `workers` run; a cell's runs
    wait for its budget (the ViT ladder) and pretrained runs for the pretrained backbone."""

    def __init__(self, args):
        from hf_lfi.training import load_image_dataset

        self.args, self.out = args, Path(args.out)
        self.model = QUICK_MODEL if args.quick else MODEL
        self.ladder = [max(4, s // 20) for s in args.ladder] if args.quick else args.ladder
        self.pretrain_steps = max(4, args.pretrain_steps // 200) if args.quick else args.pretrain_steps
        self.splits, self.chance = {}, {}
        for data in args.data:
            dataset = load_image_dataset(data)
            self.splits[data] = [s for s in SPLITS[1:] if s in dataset]
            self.chance[data] = 1 / dataset["train"].features["label"].num_classes
        self.order = plan(args)

    def job(self, row: str, data: str, ratio: float, seed: int, steps: int) -> dict:
        protocol = ROWS[row][0]
        backbone = self.pretrain_steps if protocol == "pretrained" else None
        return dict(
            name=job_name(row, data, ratio, seed, steps, backbone),
            row=row,
            protocol=protocol,
            data=data,
            ratio=ratio,
            seed=seed,
            steps=steps,
            backbone_steps=backbone,
            teacher_maps=self.args.teacher_maps,
            test_splits=self.splits[data],
            chance=self.chance[data],
        )

    def pretrain_job(self) -> dict:
        return dict(
            name=pretrain_name(self.pretrain_steps),
            row="pretrain",
            protocol="pretrain",
            data=self.args.pretrain_data,
            ratio=1.0,
            seed=0,
            steps=self.pretrain_steps,
            test_splits=[],
        )

    def finished(self, name: str) -> dict | None:
        return finished(self.out / "runs" / name)

    def budget(self, protocol: str, data: str, ratio: float) -> tuple[int | None, dict | None]:
        """(steps, None) once the cell's budget is known (steps None: the ViT reaches twice chance at no rung), else
        (None, the next ladder run to do)."""
        for steps in self.ladder:
            probe = self.job(BUDGET_ROW[protocol], data, ratio, self.args.seeds[0], steps)
            record = self.finished(probe["name"])
            if record is None:
                return None, probe
            if record["accuracy"]["validation"] >= 2 * self.chance[data]:
                return steps, None
        return None, None

    def next_jobs(self) -> list[dict]:
        """Every job not finished, in priority order, with its dependencies resolved where they can be."""
        jobs, pretrained = [], self.finished(pretrain_name(self.pretrain_steps)) is not None
        if not pretrained and any(ROWS[row][0] == "pretrained" for row, *_ in self.order):
            jobs.append(self.pretrain_job())
        for row, data, ratio, seed in self.order:
            protocol = ROWS[row][0]
            if protocol == "pretrained" and not pretrained:
                continue
            steps, probe = self.budget(protocol, data, ratio)
            job = probe if probe is not None else (self.job(row, data, ratio, seed, steps) if steps else None)
            if job is not None and self.finished(job["name"]) is None and job not in jobs:
                jobs.append(job)
        return jobs

    def run(self) -> None:
        running: dict[str, object] = {}
        start = time.time()
        while True:
            for name, process in list(running.items()):
                if process.poll() is not None:
                    del running[name]
                    record = self.finished(name)
                    status = (
                        "failed, see worker.log"
                        if record is None
                        else f"validation {record['accuracy']['validation']:.3f}"
                    )
                    print(f"[{(time.time() - start) / 60:6.1f} min] {name}: {status}", flush=True)
            pending = [j for j in self.next_jobs() if j["name"] not in running]
            failed = [j for j in pending if (self.out / "runs" / j["name"] / "failed.txt").exists()]
            elsewhere = [j for j in pending if running_elsewhere(self.out / "runs" / j["name"])]
            ready = [j for j in pending if j not in failed and j not in elsewhere]
            if not ready and not running and not elsewhere:
                if failed:
                    print(
                        f"{len(failed)} runs failed (see their failed.txt; delete it to retry): {[j['name'] for j in failed]}"
                    )
                return
            while ready and len(running) + len(elsewhere) < self.args.workers:
                job = ready.pop(0)
                arguments = ["--out", str(self.out), *(["--quick"] if self.args.quick else [])]
                running[job["name"]] = start_worker(__file__, job, self.out / "runs" / job["name"], arguments)
                print(
                    f"[{(time.time() - start) / 60:6.1f} min] start {job['name']} ({len(pending)} to do)", flush=True
                )
            time.sleep(10)


def build_parser(**defaults) -> argparse.ArgumentParser:
    """The study's arguments; `defaults` replaces some (reproduce.py: the paper's rows)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data",
        nargs="+",
        default=[str(ROOT.parent / "shared" / "data" / d) for d in ("emoji-shift", "emoji-noshortcut")],
    )
    parser.add_argument("--pretrain-data", default=str(ROOT / "data" / "emoji-pretrain"))
    parser.add_argument(
        "--pretrain-steps",
        type=int,
        default=800,
        help="optimizer steps of the backbone's pretraining (about 17 minutes on one CPU thread; runs on other "
        "backbones stay, compared in the report)",
    )
    parser.add_argument("--out", default="results/transfer-study")
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS), help="the rows run (default all)")
    parser.add_argument(
        "--teacher-maps",
        default=None,
        help="an interaction dataset (folder or Hub id) whose precomputed maps replace the mask teacher",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--ratios", type=float, nargs="+", default=[1.0, 0.1])
    parser.add_argument("--ladder", type=int, nargs="+", default=[150, 300, 600, 1200], help="budgets tried, in steps")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--report-only", action="store_true", help="tables of the runs finished so far, no training")
    parser.add_argument(
        "--quick", action="store_true", help="a smoke test: the first seed, a tiny model, 256 rows, a few steps"
    )
    parser.add_argument("--job", help=argparse.SUPPRESS)
    parser.set_defaults(**defaults)
    return parser


def main(argv: list[str] | None = None, **defaults) -> str | None:
    """The study (or one worker's run, `--job`); returns the report's text."""
    args = build_parser(**defaults).parse_args(argv)
    out = Path(args.out)
    if args.job:  # a worker process
        job = json.loads(args.job)
        try:
            record = run_job(job, out, args.quick)
        except Exception:  # a failed run is not retried by the next invocation until failed.txt is deleted
            import traceback

            (out / "runs" / job["name"] / "failed.txt").write_text(traceback.format_exc())
            raise
        (out / "runs" / job["name"] / "run.json").write_text(json.dumps(record, indent=2))
        return None
    if args.quick:
        args.seeds = args.seeds[:1]
    args.data = [str(Path(d).resolve()) for d in args.data]
    args.pretrain_data = str(Path(args.pretrain_data).resolve())
    if any(ROWS[row][0] == "pretrained" for row in args.rows):
        check_pretraining_set(args.pretrain_data, args.data)
    out.mkdir(parents=True, exist_ok=True)
    study = Study(args)
    if not args.report_only:
        study.run()
    from transfer_report import write_report

    text = write_report(study)
    print(text)
    return text


def check_pretraining_set(pretrain: str, targets: list[str]) -> None:
    """The pretraining set must exist and have left out every test object of the targets."""
    from build_pretraining_set import target_test_objects

    listed = Path(pretrain) / "excluded_objects.json"
    if not listed.exists():
        raise SystemExit(
            f"No pretraining set at {pretrain} (or it lacks excluded_objects.json): build it with "
            f"python benchmarks/build_pretraining_set.py --emoji-root PACKAGE --out {pretrain} --exclude-objects-of {' '.join(targets)}"
        )
    missing = target_test_objects(targets) - set(json.loads(listed.read_text()))
    if missing:
        raise SystemExit(
            f"{pretrain} was built without leaving out {len(missing)} test objects of the targets (e.g. "
            f"{sorted(missing)[:3]}): rebuild it with --exclude-objects-of {' '.join(targets)}"
        )


if __name__ == "__main__":
    main()
