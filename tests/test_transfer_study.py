"""benchmarks/transfer_study.py, transfer_report.py and build_pretraining_set.py: run flags, priority order, budget
ladder, paired statistics and the pretraining set (fast; the study itself is run by hand)."""

import json
import sys
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset, load_dataset
from PIL import Image
from synthetic import make_image_dataset, write_parquet_splits

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import build_pretraining_set  # noqa: E402
import study_runs  # noqa: E402
import transfer_report  # noqa: E402
import transfer_study  # noqa: E402


def job(row, steps=150, ratio=1.0, seed=0, data="d", teacher_maps=None):
    return dict(
        name=f"{row}_{seed}",
        row=row,
        data=data,
        ratio=ratio,
        seed=seed,
        steps=steps,
        test_splits=["t"],
        backbone_steps=4000,
        teacher_maps=teacher_maps,
    )


def value(flags, name):
    return flags[flags.index(name) + 1]


def test_rows_are_the_flags_they_claim(tmp_path):
    flags = {row: transfer_study.run_flags(job(row), tmp_path, quick=False) for row in transfer_study.ROWS}
    pretrained = str(tmp_path / "runs" / "pretrain__n4000")
    for row, (protocol, _, _) in transfer_study.ROWS.items():
        starts_from = value(flags[row], "--model_name_or_path") if "--model_name_or_path" in flags[row] else None
        assert (starts_from == pretrained) == (protocol == "pretrained"), row
        assert value(flags[row], "--max_steps") == "150" and value(flags[row], "--eval_steps") == "30"
    assert value(flags["vit_probe"], "--freeze_backbone") == "true" and value(flags["vit_probe"], "--method") == "vit"
    assert (
        value(flags["ivit_no_alignment"], "--alignment_weight") == "0"
        and "--teacher" not in flags["ivit_no_alignment"]
    )
    assert value(flags["ivit_finetune"], "--freeze_backbone") == "false"
    assert value(flags["ivit_original_queries"], "--config_overrides") == "student_map_source=original"
    assert value(flags["ivit_no_gate"], "--config_overrides") == "gate_granularity=none"
    at = flags["ivit_last_half"].index("--alignment_layers")
    assert flags["ivit_last_half"][at + 1 : at + 3] == ["2", "3"]  # the last half of 4 layers
    assert value(flags["ivit_wrong_1"], "--mask_teacher_wrong") == "1"
    assert value(flags["ivit_scratch"], "--config_overrides") == transfer_study.MODEL  # from scratch: the sizes
    assert "--freeze_backbone" not in flags["ivit"]  # the converted I-ViT freezes its backbone by default
    assert value(flags["ivit"], "--teacher") == "mask" and value(flags["ivit"], "--mask_teacher_grid") == "24"
    maps = transfer_study.run_flags(job("ivit", teacher_maps="org/maps"), tmp_path, quick=False)
    assert value(maps, "--teacher") == "dataset" and value(maps, "--interaction_dataset") == "org/maps"
    pretrain = transfer_study.run_flags(dict(job("pretrain", steps=4000), test_splits=[]), tmp_path, quick=False)
    assert value(pretrain, "--eval_steps") == "800" and value(pretrain, "--save_steps") == "800"
    assert "--model_name_or_path" not in pretrain and "--test_splits" not in pretrain


def test_priority_order_puts_the_main_comparison_first():
    every = list(transfer_study.ROWS)
    order = transfer_study.plan(
        Namespace(seeds=[0, 1, 2], data=["a", "b"], ratios=[1.0, 0.1], rows=every, teacher_maps=None)
    )
    assert len(order) == len(set(order))
    frozen = ["ivit", "ivit_no_alignment", "vit_finetune", "vit_probe"]  # the slow runs first
    assert order[:8] == [(row, data, 1.0, 0) for row in frozen for data in "ab"]
    assert order[8:10] == [("ivit_finetune", data, 1.0, 0) for data in "ab"]
    assert order[10:18] == [(row, data, 1.0, 1) for row in frozen for data in "ab"]
    assert {(row, seed) for row, _, ratio, seed in order if ratio == 1.0} >= {
        (row, seed) for row in transfer_study.MAIN_ROWS for seed in (0, 1, 2)
    }
    low_data = {row for row, _, ratio, _ in order if ratio == 0.1}
    assert low_data == {*transfer_study.LOW_DATA_ROWS, *transfer_study.LATE_LOW_DATA_ROWS}
    assert {row for row, *_ in order} == set(every)
    with_maps = transfer_study.plan(Namespace(seeds=[0], data=["a"], ratios=[1.0], rows=every, teacher_maps="m"))
    assert {row for row, *_ in with_maps} == set(every) - set(transfer_study.TEACHER_ROWS)  # they degrade masks


@pytest.fixture
def study(tmp_path):
    data = str(write_parquet_splits(tmp_path / "data"))  # 3 classes: chance 1/3
    args = Namespace(out=str(tmp_path / "out"), quick=False, ladder=[150, 300, 600], data=[data], seeds=[0, 1])
    args.pretrain_data, args.ratios, args.pretrain_steps = str(tmp_path / "pretrain"), [1.0], 4000
    args.rows, args.teacher_maps = list(transfer_study.ROWS), None
    return transfer_study.Study(args)


def finish(study, job, validation):
    folder = study.out / "runs" / job["name"]
    folder.mkdir(parents=True, exist_ok=True)
    record = {**job, "accuracy": {"validation": validation}, "curve": [], "trainable_parameters": 1}
    (folder / "run.json").write_text(json.dumps(record))


def test_budget_is_the_first_rung_where_the_vit_reaches_twice_chance(study):
    data = study.args.data[0]
    jobs = study.next_jobs()
    assert jobs[0]["name"] == "pretrain__n4000" and all(j["protocol"] != "pretrained" for j in jobs[1:])
    assert [j["name"] for j in jobs[1:]] == [transfer_study.job_name("vit_scratch", data, 1.0, 0, 150)]
    finish(study, jobs[0], 0.5)
    finish(study, study.job("vit_scratch", data, 1.0, 0, 150), 0.6)  # < 2/3: the next rung
    assert study.budget("scratch", data, 1.0) == (None, study.job("vit_scratch", data, 1.0, 0, 300))
    finish(study, study.job("vit_scratch", data, 1.0, 0, 300), 0.7)
    assert study.budget("scratch", data, 1.0) == (300, None)
    names = [j["name"] for j in study.next_jobs()]
    assert transfer_study.job_name("ivit_scratch", data, 1.0, 1, 300) in names
    # the pretrained cell's first rung, on the backbone of the study's pretraining steps
    assert transfer_study.job_name("vit_finetune", data, 1.0, 0, 150, 4000) in names
    assert transfer_study.job_name("vit_finetune", data, 1.0, 0, 150, 4000).endswith("__n150__b4000")
    for steps in (150, 300, 600):
        finish(study, study.job("vit_finetune", data, 1.0, 0, steps), 0.4)
    assert study.budget("pretrained", data, 1.0) == (None, None)  # never twice chance: not compared
    assert not any(j["protocol"] == "pretrained" for j in study.next_jobs())


def record(row, seed, validation, curve=()):
    accuracy = {"validation": validation}
    return dict(row=row, protocol="p", data="d", ratio=1.0, seed=seed, steps=10, accuracy=accuracy, curve=list(curve))


def test_paired_differences_and_steps_to_reach():
    records = [record("vit_finetune", s, v, [(5, v - 0.1), (10, v)]) for s, v in ((0, 0.5), (1, 0.6), (2, 0.7))]
    records += [
        record("ivit", s, v, [(5, v - d), (10, v)]) for s, v, d in ((0, 0.55, 0), (1, 0.62, 0), (2, 0.71, 0.1))
    ]
    records.append(record("ivit", 3, 0.9))  # a seed without its baseline is not paired
    runs = transfer_report.Runs(records, {("p", "d", 1.0): 10})
    differences = runs.paired("ivit", "vit_finetune", "d")
    assert differences == pytest.approx([0.05, 0.02, 0.01])
    assert transfer_report.helps(differences) and not transfer_report.helps([0.05, -0.04])
    assert not transfer_report.helps([0.05])  # one seed is no evidence
    assert transfer_report.steps_to_reach(runs, "ivit", "vit_finetune", "d") == (
        pytest.approx(20 / 3),
        3,
    )  # steps 5, 5, 10
    assert transfer_report.Runs(records, {("p", "d", 1.0): 20}).get("ivit", "d") == {}  # other budgets are left out


def artwork(path: Path, colour) -> None:
    image = np.zeros((64, 64, 4), np.uint8)
    image[16:48, 16:48] = (*colour, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def test_pretraining_set_leaves_out_the_targets_test_objects(tmp_path):
    root, emoji = tmp_path / "package", []
    for number, (name, subcategory) in enumerate([("cat", "animal"), ("dog", "animal"), ("pizza", "food")]):
        entry = dict(short_name=name, category="C", subcategory=subcategory, image=f"{name}.png", has_img_twitter=True)
        if name == "dog":
            entry["skin_variations"] = {"1F3FB": {"image": "dog-1.png", "has_img_twitter": True}}
            artwork(root / "img" / "twitter" / "64" / "dog-1.png", (0, 0, 200))
        emoji.append(entry)
        artwork(root / "img" / "twitter" / "64" / f"{name}.png", (80 * number, 100, 0))
    (root / "emoji.json").write_text(json.dumps(emoji))
    target = tmp_path / "target"
    target.mkdir()
    Dataset.from_dict({"object": ["cat"]}).to_parquet(str(target / "test_iid.parquet"))
    Dataset.from_dict({"object": ["pizza"]}).to_parquet(str(target / "train.parquet"))  # training objects may stay
    out = tmp_path / "pretrain"
    build_pretraining_set.build(root, out, [str(target)], train_size=40, validation_size=8, seed=0)
    rows = load_dataset("parquet", data_files={"train": str(out / "train.parquet")})["train"]
    assert set(rows["object"]) == {"dog", "dog_1F3FB", "pizza"}  # cat is a target test object
    assert rows.features["label"].names == ["animal", "food"]
    for row in rows.select(range(5)):
        mask = np.array(row["mask"]) > 0
        x, y, w, h = row["bbox"]
        assert mask.sum() > 0 and mask[int(y) : int(y + h), int(x) : int(x + w)].sum() == mask.sum()
    assert json.loads((out / "excluded_objects.json").read_text()) == ["cat"]
    transfer_study.check_pretraining_set(str(out), [str(target)])
    Dataset.from_dict({"object": ["dog"]}).to_parquet(str(target / "test_shifted.parquet"))
    with pytest.raises(SystemExit, match="without leaving out 1 test objects"):
        transfer_study.check_pretraining_set(str(out), [str(target)])


def test_an_interrupted_run_resumes_from_its_checkpoint_and_a_finished_one_is_never_retrained(tmp_path):
    from transformers import TrainerCallback

    data = str(write_parquet_splits(tmp_path / "data"))
    run = dict(job("vit_scratch", steps=10, data=data), name="run", test_splits=[], protocol="scratch")
    run_dir = tmp_path / "runs" / "run"
    assert study_runs.resume_flags(run_dir) == []  # a new run

    class Kill(TrainerCallback):  # the process dies after the checkpoint of step 4
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 5:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        transfer_study.train(transfer_study.run_flags(run, tmp_path, quick=True), callbacks=[Kill()])
    assert study_runs.resume_flags(run_dir) == ["--resume_from_checkpoint", "latest"]
    record = transfer_study.run_job(run, tmp_path, quick=True)
    state = json.loads((run_dir / "trainer_state.json").read_text())
    assert state["global_step"] == 10 and [step for step, _ in record["curve"]] == [2, 4, 6, 8, 10]
    resumes = json.loads((run_dir / "run_config.json").read_text())["resumes"]
    assert [r["checkpoint"] for r in resumes] == ["checkpoint-4"]  # resumed, not started again

    (run_dir / "run.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="holds a finished run"):
        study_runs.resume_flags(run_dir)
    interrupted = tmp_path / "runs" / "early"  # killed before its first checkpoint: its records describe nothing
    interrupted.mkdir()
    (interrupted / "run_config.json").write_text("{}")
    assert study_runs.resume_flags(interrupted) == ["--overwrite_output_dir", "true"]


def test_the_report_is_rebuilt_from_the_finished_runs_in_one_command(tmp_path):
    data = write_parquet_splits(tmp_path / "data")  # 3 classes: chance 1/3
    make_image_dataset(6, seed=2).add_column("object", ["o"] * 6).to_parquet(str(data / "test_iid.parquet"))
    pretrain, out = tmp_path / "pretrain", tmp_path / "out"
    pretrain.mkdir()
    (pretrain / "excluded_objects.json").write_text('["o"]')
    argv = ["--data", str(data), "--pretrain-data", str(pretrain), "--out", str(out), "--seeds", "0", "1"]
    argv += ["--ratios", "1.0"]
    study = transfer_study.Study(transfer_study.build_parser().parse_args(argv))
    data = study.args.data[0]
    finish(study, study.pretrain_job(), 0.5)
    validation = {"vit_finetune": (0.9, 0.8), "vit_probe": (0.5, 0.6), "ivit_no_alignment": (0.6, 0.6)}
    validation["ivit"] = (0.7, 0.75)
    for row, accuracies in validation.items():
        for seed, accuracy in enumerate(accuracies):
            job = study.job(row, data, 1.0, seed, 150)
            finish(study, job, accuracy)
            record = json.loads((out / "runs" / job["name"] / "run.json").read_text())
            record["accuracy"] = {"validation": accuracy, "test_iid": accuracy - 0.1, "test_shifted": None}
            (out / "runs" / job["name"] / "run.json").write_text(json.dumps(record))
    before = sorted(path.name for path in (out / "runs").iterdir())

    text = transfer_report.main(argv)
    assert (out / "report.md").read_text() == text
    assert sorted(path.name for path in (out / "runs").iterdir()) == before  # nothing trained
    assert "Pretrained backbone: ViT trained 800 steps" in text  # the study's default backbone
    assert "| pretrained | data | 1 | 150: 0.900 | 0.333 | 150 |" in text
    table1 = text.split("## Table 1 analogue")[1]
    assert "| ViT fine-tuned | 2 | 1 | 0.850 ± 0.071 | 0.750 ± 0.071 | n/a | – |" in table1
    assert "| I-ViT frozen, full (T3 row 5; the paper's protocol) | 2 | 1 | 0.725 ± 0.035 |" in table1
    assert "| -0.125 ± 0.106 (n=2) | +0.175 ± 0.035 (n=2) | +0.125 ± 0.035 (n=2) |" in table1  # paired by seed
    assert "| data | ViT fine-tuned | 0.850 | I-ViT frozen, full (T3 row 5; the paper's protocol) | 0.725 |" in text
    verdicts = text.split("## Where LFI helps")[1]
    assert "| data | I-ViT frozen, full (T3 row 5; the paper's protocol) | ViT frozen + head | +0.175" in verdicts
    assert verdicts.count("| I-ViT frozen, IQ + gate, no alignment (T3 row 2) |") == 1  # each verdict once


def test_a_reused_pid_is_not_a_run_of_another_study(tmp_path):
    import os

    run_dir = tmp_path / "runs" / "ivit__data__r1__s0__n150"
    run_dir.mkdir(parents=True)
    (run_dir / "worker.pid").write_text(str(os.getpid()))  # alive, but this test is not that run's worker
    assert not study_runs.running_elsewhere(run_dir)
    (run_dir / "worker.pid").write_text("999999999")  # no such process
    assert not study_runs.running_elsewhere(run_dir)
