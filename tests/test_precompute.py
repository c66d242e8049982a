"""`python -m hf_lfi.precompute` / `hf-lfi precompute`: one process or two under `accelerate launch --cpu`, the same
dataset row for row; a run killed mid-way resumes without mapping its finished shards again."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from datasets import load_from_disk
from synthetic import CLASS_NAMES, make_image_dataset
from tiny_llava import tiny_llava

from hf_lfi.cli import main as cli_main

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A saved tiny teacher (model + processor) and a saved 16-row dataset with a ClassLabel column."""
    root = tmp_path_factory.mktemp("precompute")
    model, processor = tiny_llava()
    model.save_pretrained(root / "teacher")
    processor.save_pretrained(root / "teacher")
    make_image_dataset(16).save_to_disk(str(root / "data"))
    return root


def arguments(files, out):
    return [
        "--teacher",
        str(files / "teacher"),
        "--dataset",
        str(files / "data"),
        "--out",
        str(out),
        "--shard-size",
        "2",
        "--batch-size",
        "2",
        "--max-new-tokens",
        "6",
        "--dtype",
        "float32",
    ]


PORTS = iter(range(29531, 29600))  # a fresh rendezvous port per launch: a killed run's port may still be held


def launch(files, out, processes: int) -> subprocess.Popen:
    """`accelerate launch -m hf_lfi.precompute`; `--multi_gpu` selects accelerate's torchrun launcher, whose
    processes join over gloo on a machine without GPUs (`--cpu` alone needs MPI for several processes)."""
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        str(processes),
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(next(PORTS)),
        "-m",
        "hf_lfi.precompute",
        *arguments(files, out),
    ]
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def assert_same_rows(left, right):
    assert left.column_names == right.column_names and len(left) == len(right) == 16
    for column in left.column_names:
        if column == "interaction_map":
            np.testing.assert_array_equal(np.asarray(left[column]), np.asarray(right[column]))
        elif column not in ("image", "mask"):
            assert left[column] == right[column], column
    assert [np.asarray(i).tolist() for i in left["image"]] == [np.asarray(i).tolist() for i in right["image"]]


def test_two_processes_give_the_one_process_dataset_and_a_killed_run_resumes(files, tmp_path, capsys):
    assert cli_main(["precompute", *arguments(files, tmp_path / "one")]) == 0  # `hf-lfi precompute`, one process
    one = load_from_disk(str(tmp_path / "one" / "dataset"))
    assert (
        set(one["interaction_prompt"]) == {"classification_fg_bg"} and "class list" not in one[0]["interaction_answer"]
    )
    card = (tmp_path / "one" / "dataset" / "README.md").read_text()
    assert "4 x 4" in card and not (tmp_path / "one" / "shards").exists()

    two = launch(files, tmp_path / "two", 2)
    log = two.communicate(timeout=300)[0]
    assert two.returncode == 0, log[-4000:]
    assert "process 1/2" in log and "process 2/2" in log
    assert_same_rows(one, load_from_disk(str(tmp_path / "two" / "dataset")))
    assert "red" in one.features["label"].names and CLASS_NAMES == one.features["label"].names

    killed = launch(files, tmp_path / "killed", 2)
    shards = tmp_path / "killed" / "shards"
    deadline = time.monotonic() + 240
    while not list(shards.glob("*-of-00008")):  # the first finished shard: kill every process of the run
        assert killed.poll() is None and time.monotonic() < deadline, "the run ended before a shard was seen"
        time.sleep(0.005)
    processes = [psutil.Process(killed.pid), *psutil.Process(killed.pid).children(recursive=True)]
    for process in processes:  # torchrun's workers run in sessions of their own: kill each of them
        process.send_signal(signal.SIGKILL)
    killed.communicate()
    psutil.wait_procs(processes, timeout=30)
    finished = sorted(p.name for p in shards.iterdir() if not p.name.endswith(".partial"))
    assert 0 < len(finished) < 8 and not (tmp_path / "killed" / "dataset").exists()

    resumed = launch(files, tmp_path / "killed", 2)
    log = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, log[-4000:]
    skipped = [int(n) for n in re.findall(r"\((\d+) of 8 finished before, skipped\)", log)]
    assert skipped == [len(finished)] * 2, log[
        -4000:
    ]  # both processes skipped every shard the killed run had finished
    assert_same_rows(one, load_from_disk(str(tmp_path / "killed" / "dataset")))
    assert not (tmp_path / "killed" / "shards").exists()  # assembled: the shards (and partial ones) are gone

    capsys.readouterr()
    assert cli_main(["precompute", *arguments(files, tmp_path / "killed")]) == 0
    assert "is complete already" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="map_fn.layers"):  # a finished folder still refuses other settings
        cli_main(["precompute", *arguments(files, tmp_path / "killed"), "--layers", "0"])


def test_precompute_ends_with_valid_and_status_counts(files, tmp_path, capsys):
    """The final line counts the valid rows and every status; below the share training warns at, a warning."""
    from collections import Counter

    make_image_dataset(6).save_to_disk(str(tmp_path / "six"))
    argv = arguments(files, tmp_path / "out")
    argv[argv.index("--dataset") + 1] = str(tmp_path / "six")
    assert cli_main(["precompute", *argv]) == 0
    captured = capsys.readouterr()
    result = load_from_disk(str(tmp_path / "out" / "dataset"))
    valid = sum(result["interaction_valid"])
    statuses = ", ".join(f"{s} {n}" for s, n in Counter(result["interaction_status"]).most_common())
    assert f"{valid} of 6 rows ({valid / 6:.0%}) have a valid map; statuses: {statuses}." in captured.out
    if valid < 3:  # the tiny random teacher's answers rarely parse
        assert "hf-lfi precompute: warning:" in captured.err
    assert cli_main(["precompute", *argv]) == 0
    assert f"complete already (load it with datasets.load_from_disk); {valid} of 6 rows" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--dtype", "float8"], "argument --dtype: invalid choice: 'float8'"),
        (["--layers", "a"], "argument --layers: must be comma-separated text-layer indices, e.g. 0,1,2"),
        (["--shard-size", "0"], "argument --shard-size: must be a positive integer, got '0'"),
        (["--batch-size", "-2"], "argument --batch-size: must be a positive integer"),
        (["--max-new-tokens", "0"], "argument --max-new-tokens: must be a positive integer"),
    ],
)
def test_bad_arguments_are_one_line_errors(files, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["precompute", *arguments(files, tmp_path / "out"), *extra])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_data_and_teacher_problems_are_one_line_errors_before_the_teacher_runs(files, tmp_path):
    def precompute(*extra, dataset=None):
        argv = arguments(files, tmp_path / "out") + list(extra)
        if dataset is not None:
            argv[argv.index("--dataset") + 1] = str(dataset)
        with pytest.raises(SystemExit) as exit_info:
            cli_main(["precompute", *argv])
        return str(exit_info.value.code)

    assert "the detection prompt 'detection_fg_bg' asks about each object" in precompute("--prompt", "detection_fg_bg")
    assert "COCO-style objects column 'objects' with 'bbox' and 'category'" in precompute(
        "--prompt", "detection_fg_bg"
    )
    assert "Unknown prompt 'nope'" in precompute("--prompt", "nope")
    assert "layers [9] do not exist: the teacher has 2 text layers" in precompute("--layers", "0,9")
    assert "no image column 'picture'" in precompute("--image-column", "picture")
    make_image_dataset(2).select([]).save_to_disk(str(tmp_path / "empty"))
    assert "has no rows" in precompute(dataset=tmp_path / "empty")
    assert "class_names must be distinct; repeated: ['red']" in precompute("--class-names", "red,green,red")
    assert "'classification_object' has none" in precompute("--prompt", "classification_object", "--class-names", "a")
    (tmp_path / "a-file").write_text("")
    argv = arguments(files, tmp_path / "a-file")
    with pytest.raises(SystemExit, match="--out .*a-file is a file; give a folder"):
        cli_main(["precompute", *argv])
    assert not (tmp_path / "out" / "shards").exists()  # nothing ran


def test_a_processor_of_another_checkpoint_is_refused_before_the_teacher_runs(files, tmp_path):
    """A teacher folder whose processor comes from another model: one line saying so (it failed 36 frames deep)."""
    from tiny_vlms import tiny_vlm
    from transformers import AutoModelForImageTextToText

    from hf_lfi.interactions import InteractionExtractor

    model = AutoModelForImageTextToText.from_pretrained(files / "teacher")
    _, other_processor = tiny_vlm("llava_next")
    model.save_pretrained(tmp_path / "mixed")
    other_processor.save_pretrained(tmp_path / "mixed")
    argv = arguments(files, tmp_path / "out")
    argv[argv.index("--teacher") + 1] = str(tmp_path / "mixed")
    with pytest.raises(SystemExit, match="The processor \\(LlavaNextProcessor\\) .*: they come from different models"):
        cli_main(["precompute", *argv])
    _, processor = tiny_llava()
    model.resize_token_embeddings(100)  # the same family, another vocabulary
    with pytest.raises(ValueError, match="The processor \\(LlavaProcessor\\) has \\d+ tokens, .* embeds only 100"):
        InteractionExtractor(model, processor)
    other, _ = tiny_vlm("qwen2_vl")  # another family: its image token is missing from the LLaVA processor's prompts
    with pytest.raises(ValueError, match="marks no image with the teacher's image token"):
        InteractionExtractor(other, processor)
