"""benchmarks/reproduce.py: the transfer study on the paper's rows (fast), and its --quick run end to end (slow,
`pytest -m slow`)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_transfer_study import artwork

REPO = Path(__file__).resolve().parents[1]
EMOJI_SHIFT = REPO.parent / "shared" / "data" / "emoji-shift"
sys.path.insert(0, str(REPO / "benchmarks"))

import build_pretraining_set  # noqa: E402
import reproduce  # noqa: E402
import transfer_study  # noqa: E402


def test_reproduce_is_the_study_on_the_papers_rows():
    args = transfer_study.build_parser(rows=reproduce.PAPER_ROWS, data=[reproduce.DATA]).parse_args([])
    assert (
        args.rows == reproduce.PAPER_ROWS
        and args.data == [reproduce.DATA]
        and set(args.rows) <= set(transfer_study.ROWS)
    )
    order = transfer_study.plan(args)
    assert {row for row, *_ in order} == set(reproduce.PAPER_ROWS)  # Tables 1-3 of the paper
    assert {(row, ratio) for row, _, ratio, _ in order if ratio < 1} == {
        (row, 0.1) for row in ("vit_finetune", "ivit", "vit_scratch", "ivit_scratch")
    }  # Table 2's data ratio, in both protocols
    assert transfer_study.build_parser().parse_args([]).rows == list(transfer_study.ROWS)


@pytest.mark.slow
@pytest.mark.skipif(not EMOJI_SHIFT.exists(), reason="needs ../shared/data/emoji-shift")
def test_quick_reproduction_end_to_end(tmp_path):
    root, emoji = tmp_path / "package", []  # Twemoji's layout, with objects no target has
    for number, subcategory in enumerate(["shape-a", "shape-b", "shape-c"]):
        name = f"synthetic_{number}"
        emoji.append(dict(short_name=name, category="C", subcategory=subcategory, image=f"{name}.png"))
        emoji[-1]["has_img_twitter"] = True
        artwork(root / "img" / "twitter" / "64" / f"{name}.png", (90 * number, 200, 40))
    (root / "emoji.json").write_text(json.dumps(emoji))
    pretrain = tmp_path / "pretrain"
    build_pretraining_set.build(root, pretrain, [str(EMOJI_SHIFT)], train_size=256, validation_size=64, seed=0)
    out = tmp_path / "out"
    argv = ["--quick", "--data", str(EMOJI_SHIFT), "--pretrain-data", str(pretrain), "--out", str(out)]
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "reproduce.py"), *argv],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=1800,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    runs = [json.loads(path.read_text()) for path in (out / "runs").glob("*/run.json")]
    assert {r["row"] for r in runs} == {"pretrain", *reproduce.PAPER_ROWS}
    assert all(0 <= r["accuracy"]["validation"] <= 1 for r in runs)
    report = (out / "report.md").read_text()
    for name in ("convergence.png", "alignment_emoji-shift.png", "examples_emoji-shift.png"):
        assert (out / name).exists() and f"]({name})" in report
    assert "Table 3 analogue" in report and "C_AGT" in report and "The paper's numbers" in report
