"""benchmarks/reproduce.py: its helpers (fast) and its --quick run end to end (slow, `pytest -m slow`)."""

import importlib.util
import json
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EMOJI_SHIFT = REPO.parent / "shared" / "data" / "emoji-shift"


@pytest.fixture(scope="module")
def reproduce():
    spec = importlib.util.spec_from_file_location("reproduce", REPO / "benchmarks" / "reproduce.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_variants_cover_the_paper_comparisons(reproduce):
    args = Namespace(teacher_maps=None, model="hidden_size=32", ratios=[1.0, 0.5, 0.1])
    runs = reproduce.variants(args)
    assert set(runs) == {
        "vit",
        "ivit",
        "ablation_no_constraint",
        "ablation_constraint_on_original",
        "ablation_no_gate",
        "ivit_degraded_teacher",
        "vit_data50",
        "ivit_data50",
        "vit_data10",
        "ivit_data10",
    }
    assert runs["ablation_no_constraint"][-2:] == ["--alignment_weight", "0"]
    assert "hidden_size=32,gate_granularity=none" in runs["ablation_no_gate"]
    with_maps = reproduce.variants(Namespace(teacher_maps="org/maps", model="m", ratios=[1.0]))
    assert "ivit_degraded_teacher" not in with_maps and "org/maps" in with_maps["ivit"]
    flags = reproduce.with_overrides(["--config_overrides", "a=1", "--seed", "0"], ["--config_overrides", "a=1,b=2"])
    assert flags == ["--seed", "0", "--config_overrides", "a=1,b=2"]


def test_steps_to_reach_the_baselines_best(reproduce):
    vit = [[(10, 0.5), (20, 0.7), (30, 0.6)], [(10, 0.4), (20, 0.6), (30, 0.8)]]
    ivit = [[(10, 0.7), (20, 0.8), (30, 0.8)], [(10, 0.5), (20, 0.9), (30, 0.9)]]
    reach, best = reproduce.steps_to_reach(ivit, vit)
    assert reach == 15 and best == 25  # seed 0: 10 vs 20; seed 1: 20 vs 30


@pytest.mark.slow
@pytest.mark.skipif(not EMOJI_SHIFT.exists(), reason="needs ../shared/data/emoji-shift")
def test_quick_reproduction_end_to_end(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "reproduce.py"),
            "--quick",
            "--data",
            str(EMOJI_SHIFT),
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "results.json").read_text())
    assert {"vit", "ivit", "B_ivit_converted", "ablation_no_gate"} <= set(summary["runs"])
    assert all(0 <= r["accuracy"]["test_iid"] <= 1 for runs in summary["runs"].values() for r in runs)
    for name in ("report.md", "convergence.png", "alignment.png", "examples.png"):
        assert (tmp_path / name).exists()
    assert "C_AGT" in (tmp_path / "report.md").read_text()
