"""`hf-lfi train` as a user runs it: the console command in a subprocess, from a folder outside the repository, with
only the installed package (its wheel), offline; `--help`; shipped configs by name."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from hf_lfi import recipe

REPO = Path(__file__).resolve().parents[1]
HF_LFI = str(Path(sys.executable).parent / "hf-lfi")
SMOKE_CAPS = ["--max_steps", "2", "--max_train_samples", "16", "--max_eval_samples", "8", "--use_cpu", "true"]


def offline_env(tmp_path: Path, **extra) -> dict:
    """This process's environment, offline, with an empty Hugging Face cache."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"), **extra}


@pytest.fixture(scope="module")
def installed_package(tmp_path_factory) -> Path:
    """The package as `pip install hf_lfi` lays it out: its wheel built from the repository and unpacked into a
    folder of its own (the dependencies are this environment's)."""
    root = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(root), str(REPO)],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = root.glob("hf_lfi-*.whl")
    site = root / "site"
    zipfile.ZipFile(wheel).extractall(site)
    return site


def test_main_command_runs_with_only_the_installed_package(installed_package, tmp_path):
    """The README's main job: the shipped config by name, the shipped demo data, nothing from the repository."""
    work = tmp_path / "somewhere"
    work.mkdir()
    script = (
        "import sys, hf_lfi; from hf_lfi.cli import main; print('hf_lfi at', hf_lfi.__file__, flush=True); "
        "sys.exit(main(sys.argv[1:]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, "train", "--config", "tiny_smoke", *SMOKE_CAPS],
        capture_output=True,
        text=True,
        cwd=work,
        env=offline_env(tmp_path, PYTHONPATH=str(installed_package)),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"hf_lfi at {installed_package}" in done.stdout
    run = work / "runs" / "tiny_smoke"
    results = json.loads((run / "all_results.json").read_text())
    assert {"validation_accuracy", "test_iid_accuracy", "test_shifted_accuracy", "train_loss"} <= set(results)
    record = json.loads((run / recipe.RUN_CONFIG_NAME).read_text())
    assert record["data"]["dataset_name"] == "hf_lfi:emoji-shift-demo" and record["training"]["max_steps"] == 2
    config = json.loads((run / "config.json").read_text())
    assert config["model_type"] == "ivit" and len(config["id2label"]) == 9


def test_help_lists_config_and_the_shipped_configs():
    done = subprocess.run([HF_LFI, "train", "--help"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--config NAME_OR_PATH" in done.stdout and "tiny_smoke" in done.stdout and "--method" in done.stdout
    top = subprocess.run([HF_LFI, "--help"], capture_output=True, text=True)
    assert top.returncode == 0 and "train" in top.stdout and "publish" in top.stdout


def test_config_by_name_by_path_and_unknown(tmp_path):
    by_name = recipe.parse_arguments(["--config", "tiny_smoke"])
    by_file = recipe.parse_arguments(["--config", str(recipe.CONFIGS_DIR / "tiny_smoke.yaml")])
    assert by_name[1] == by_file[1] and by_name[1].dataset_name == "hf_lfi:emoji-shift-demo"
    assert recipe.parse_arguments(["--config=tiny_smoke.yaml"])[1] == by_name[1]
    with pytest.raises(
        FileNotFoundError, match="--config tiny_smoek: no such file, and no shipped config.*tiny_smoke"
    ):
        recipe.parse_arguments(["--config", "tiny_smoek"])
    with pytest.raises(FileNotFoundError, match="no such file"):
        recipe.parse_arguments(["--config", str(tmp_path / "tiny_smoke")])


def test_pin_memory_only_with_a_gpu():
    import torch

    _, _, training_args = recipe.parse_arguments(["--output_dir", "unused"])
    assert training_args.dataloader_pin_memory == torch.cuda.is_available()


def test_shipped_demo_data_set_by_name():
    from hf_lfi.demo import DEMO_DATASET, shipped_datasets
    from hf_lfi.training import load_image_dataset

    assert shipped_datasets() == [DEMO_DATASET]
    splits = load_image_dataset(DEMO_DATASET)
    assert {name: len(rows) for name, rows in splits.items()} == {
        "train": 256,
        "validation": 64,
        "test_iid": 64,
        "test_shifted": 64,
    }
    assert set(splits["train"].column_names) == {"image", "mask", "label", "bbox", "object", "background"}
    assert splits["train"][0]["image"].size == (64, 64)
    for wrong in ("hf_lfi:emoji-shift", "hf_lfi:../demo_data"):
        with pytest.raises(ValueError, match="ships with hf_lfi \\(shipped: hf_lfi:emoji-shift-demo\\)"):
            load_image_dataset(wrong)


def test_repository_shim_and_module_entry_points_are_the_recipe():
    """`training/run.py` (for `accelerate launch training/run.py`) and `python -m hf_lfi.recipe` (for `accelerate
    launch -m hf_lfi.recipe`; its two-process run is in test_run.py) both parse the recipe's flags."""
    for command in ([sys.executable, str(REPO / "training" / "run.py")], [sys.executable, "-m", "hf_lfi.recipe"]):
        done = subprocess.run([*command, "--help"], capture_output=True, text=True)
        assert done.returncode == 0 and "--config NAME_OR_PATH" in done.stdout, done.stderr[-2000:]


def test_import_hf_lfi_loads_the_teacher_evaluate_and_matplotlib_only_when_used():
    script = (
        "import sys, hf_lfi\n"
        "heavy = ('hf_lfi.interactions.teacher', 'evaluate', 'matplotlib', 'datasets', 'hf_lfi.recipe')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
        "hf_lfi.InteractionExtractor, hf_lfi.metrics.load\n"
        "print(sorted(m for m in heavy[:2] if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[:2] == ["[]", "['evaluate', 'hf_lfi.interactions.teacher']"]
