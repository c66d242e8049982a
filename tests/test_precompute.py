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
    with pytest.raises(ValueError, match="map_fn.layers"):  # a finished folder still refuses other settings
        cli_main(["precompute", *arguments(files, tmp_path / "killed"), "--layers", "0"])
