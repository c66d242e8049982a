"""Every name is a Hub id or a path: models, datasets, interaction datasets and teachers load by Hub id from a
Hub-compatible server on 127.0.0.1 (`hub_server`), and a missing path, an unknown id, an unreachable or an offline
Hub each give one line naming the id and the offline setting."""

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_vit
from datasets import DatasetDict, load_from_disk
from huggingface_hub import constants
from synthetic import make_image_dataset, write_parquet_splits
from test_run import tiny_argv
from tiny_llava import tiny_llava

from hf_lfi import IViTForImageClassification, MaskInteractionMapFn, push_interaction_dataset, recipe
from hf_lfi.cli import main as cli_main
from hf_lfi.modeling.name_or_path import NameOrPathError, looks_like_path, resolve_name_or_path
from hf_lfi.training import load_image_dataset

REPO = Path(__file__).resolve().parents[1]
SPLITS = {"train": 12, "validation": 6, "test_iid": 3, "test_shifted": 4}


def closed_port_url() -> str:
    """An address on 127.0.0.1 where nothing listens: an unreachable Hub."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def push_shapes(repo_id: str = "org/shapes") -> DatasetDict:
    splits = DatasetDict({split: make_image_dataset(n, seed=i) for i, (split, n) in enumerate(SPLITS.items())})
    splits.push_to_hub(repo_id)
    return splits


def test_names_written_as_paths_are_paths_and_the_rest_hub_ids():
    hub_ids = ["org/name", "name", "runs/ivit", ".x"]  # ".x" is no Hub id either: resolve_name_or_path says so
    paths = ["./x", "../x", "/x", "~/x", ".", "..", "a/b/c", "org/na me", "x/"]
    assert [looks_like_path(name) for name in hub_ids + paths] == [False] * len(hub_ids) + [True] * len(paths)


def test_a_missing_path_is_no_folder_and_never_goes_to_the_hub(hub_server, tmp_path, monkeypatch):
    missing = tmp_path / "nope"
    with pytest.raises(NameOrPathError, match=re.escape(f"No folder at '{missing}' ({missing}).")):
        IViTForImageClassification.from_vit(str(missing))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(NameOrPathError, match=re.escape(f"No folder at './runs/x' ({tmp_path / 'runs' / 'x'}).")):
        load_image_dataset("./runs/x")
    with pytest.raises(NameOrPathError, match="^No folder at 'runs/a/b'"):
        resolve_name_or_path("runs/a/b", "dataset")
    with pytest.raises(NameOrPathError, match="^'a b' is neither an existing path nor a Hub model id"):
        resolve_name_or_path("a b")
    assert hub_server.requests == []


def test_conversion_from_a_hub_model_id_and_a_local_folder_of_the_same_name_first(hub_server, tmp_path, monkeypatch):
    vit = tiny_vit()
    vit.save_pretrained(tmp_path / "vit")
    hub_server.add_repo("org/tiny-vit", tmp_path / "vit")
    model = IViTForImageClassification.from_vit("org/tiny-vit").eval()
    pixel_values = torch.randn(2, 3, 30, 30)
    with torch.no_grad():
        torch.testing.assert_close(model(pixel_values).logits, vit(pixel_values).logits)
    assert ("GET", "/api/models/org/tiny-vit") in hub_server.requests  # the one check of the id
    assert any(path.endswith("/model.safetensors") for _, path in hub_server.requests)  # weights through the Hub

    other = tiny_vit(num_labels=5)
    monkeypatch.chdir(tmp_path)
    other.save_pretrained(tmp_path / "org" / "tiny-vit")  # an existing path wins over the Hub id
    hub_server.requests.clear()
    assert IViTForImageClassification.from_vit("org/tiny-vit").config.num_labels == 5
    assert hub_server.requests == []


def test_unknown_repositories_and_revisions_are_one_line(hub_server):
    hub_server.add_repo("org/tiny-vit", {"config.json": "{}"})
    with pytest.raises(NameOrPathError) as error:
        IViTForImageClassification.from_vit("org/missing")
    assert str(error.value).startswith(f"No model 'org/missing' on the Hub ({hub_server.url}), and no local folder")
    with pytest.raises(NameOrPathError, match="^No dataset 'org/tiny-vit' on the Hub"):  # a model, not a dataset
        load_image_dataset("org/tiny-vit")
    with pytest.raises(NameOrPathError, match="^The model 'org/tiny-vit' on the Hub .* has no revision 'v2'"):
        resolve_name_or_path("org/tiny-vit", revision="v2")
    assert resolve_name_or_path("org/tiny-vit") == "org/tiny-vit"


def test_unreachable_and_offline_hubs_are_one_line_naming_the_id_and_the_setting(hub_server, tmp_path, monkeypatch):
    tiny_vit().save_pretrained(tmp_path / "vit")
    hub_server.add_repo("org/tiny-vit", tmp_path / "vit")
    hub_server.add_repo("org/cached-vit", tmp_path / "vit")
    IViTForImageClassification.from_vit("org/cached-vit")  # downloaded once: in the cache from now on

    url = closed_port_url()
    with monkeypatch.context() as unreachable:
        unreachable.setattr(constants, "ENDPOINT", url)
        with pytest.raises(NameOrPathError) as error:
            resolve_name_or_path("org/tiny-vit")
        assert str(error.value) == (
            f"Cannot reach the Hub ({url}) for the model 'org/tiny-vit' (ConnectError); set HF_HUB_OFFLINE=1 to "
            "load it from the local cache, which has no copy: pass a local folder."
        )
        with pytest.raises(NameOrPathError, match="org/cached-vit.*HF_HUB_OFFLINE=1 .*cache, which holds a copy"):
            resolve_name_or_path("org/cached-vit")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    hub_server.requests.clear()
    with pytest.raises(NameOrPathError) as error:
        IViTForImageClassification.from_vit("org/tiny-vit")
    assert str(error.value) == (
        f"'org/tiny-vit' is no local path and the Hugging Face cache has no copy of it, while HF_HUB_OFFLINE=1 "
        f"keeps the Hub ({hub_server.url}) offline: unset HF_HUB_OFFLINE to download it, or pass a local folder."
    )
    assert IViTForImageClassification.from_vit("org/cached-vit").config.num_labels == 3  # from the cache
    assert hub_server.requests == []
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(NameOrPathError, match="'org/shapes' .* while HF_DATASETS_OFFLINE=1 keeps the Hub"):
        load_image_dataset("org/shapes")


def test_one_loader_keeps_split_names_for_hub_ids_and_local_folders(hub_server, tmp_path):
    pushed = push_shapes()
    loaded = load_image_dataset("org/shapes")
    assert {split: len(rows) for split, rows in loaded.items()} == SPLITS
    assert loaded["test_iid"]["label"] == pushed["test_iid"]["label"]
    DatasetDict({"train": make_image_dataset(5)}).push_to_hub("org/shapes", config_name="small")
    assert len(load_image_dataset("org/shapes", config_name="small")["train"]) == 5

    parquet = write_parquet_splits(tmp_path / "parquet", SPLITS)  # as ../shared/data/emoji-shift ships
    assert {split: len(rows) for split, rows in load_image_dataset(str(parquet)).items()} == SPLITS
    assert list(load_image_dataset(str(parquet / "test_iid.parquet"))) == ["test_iid"]
    with pytest.raises(ValueError, match="applies to Hub datasets, not to the local path"):
        load_image_dataset(str(parquet), config_name="small")


def test_training_by_hub_ids_of_dataset_interaction_dataset_model_and_online_teacher(hub_server, tmp_path):
    run = recipe
    shapes = push_shapes()
    results = run.main(tiny_argv("org/shapes", tmp_path / "by-id", "--test_splits", "test_iid", "test_shifted"))
    assert {"validation_accuracy", "test_iid_accuracy", "test_shifted_accuracy"} <= set(results)
    DatasetDict({"train": make_image_dataset(5)}).push_to_hub("org/shapes", config_name="small")
    config = ["--dataset_name", "org/shapes", "--dataset_config_name", "small", "--eval_split", ""]
    _, data_args, training_args = run.parse_arguments([*config, "--output_dir", str(tmp_path / "small")])
    assert len(run.load_data(data_args, training_args)[0]) == 5

    maps = shapes["train"].map(MaskInteractionMapFn(grid=(8, 8)), batched=True)
    push_interaction_dataset(DatasetDict({"train": maps}), "org/shapes-maps", {"teacher": "mask teacher"})
    argv = tiny_argv(
        "org/shapes", tmp_path / "maps", "--teacher", "dataset", "--interaction_dataset", "org/shapes-maps"
    )
    results = run.main(argv)
    assert "validation_accuracy" in results
    state = (tmp_path / "maps" / "trainer_state.json").read_text()
    assert '"alignment_loss"' in state
    assert any(path.startswith("/datasets/org/shapes-maps/resolve/") for _, path in hub_server.requests)

    tiny_vit(image_size=32, patch_size=8).save_pretrained(tmp_path / "vit")  # the shape of test_run's TINY
    hub_server.add_repo("org/tiny-vit", tmp_path / "vit")
    llava, processor = tiny_llava()
    llava.save_pretrained(tmp_path / "llava")
    processor.save_pretrained(tmp_path / "llava")
    hub_server.add_repo("org/tiny-llava", tmp_path / "llava")
    teacher = ["--teacher", "llava", "--teacher_model_name_or_path", "org/tiny-llava", "--teacher_max_new_tokens", "4"]
    argv = tiny_argv("org/shapes", tmp_path / "online", "--model_name_or_path", "org/tiny-vit", *teacher)
    run.main([*argv, "--max_steps", "2"])
    assert IViTForImageClassification.from_pretrained(tmp_path / "online").config.freeze_backbone  # converted
    run_config = json.loads((tmp_path / "online" / "run_config.json").read_text())
    assert run_config["model"]["model_name_or_path"] == "org/tiny-vit"  # the card's base model: the Hub id
    assert "teacher_valid" in (tmp_path / "online" / "trainer_state.json").read_text()
    assert ("GET", "/api/models/org/tiny-llava") in hub_server.requests


def test_precompute_keeps_split_names_of_a_parquet_folder(tmp_path, capsys):
    model, processor = tiny_llava()
    model.save_pretrained(tmp_path / "teacher")
    processor.save_pretrained(tmp_path / "teacher")
    parquet = write_parquet_splits(tmp_path / "parquet", SPLITS)
    common = ["--shard-size", "4", "--max-new-tokens", "4", "--dtype", "float32"]
    teacher_and_out = ["--teacher", str(tmp_path / "teacher"), "--out", str(tmp_path / "maps")]
    argv = ["precompute", *teacher_and_out, "--dataset", str(parquet), "--split", "test_shifted", *common]
    assert cli_main(argv) == 0
    maps = load_from_disk(str(tmp_path / "maps" / "dataset"))
    assert len(maps) == SPLITS["test_shifted"] and np.asarray(maps[0]["interaction_map"]).shape == (4, 4)

    message = f"hf-lfi precompute: no split 'test' in {parquet} (splits: {sorted(SPLITS)})."
    with pytest.raises(SystemExit, match=f"^{re.escape(message)}$"):
        cli_main(["precompute", *teacher_and_out, "--dataset", str(parquet), "--split", "test"])
    capsys.readouterr()
    assert cli_main(["precompute", "--teacher", "./nope", "--dataset", str(parquet), "--out", "x"]) == 2
    assert capsys.readouterr().err == f"hf-lfi precompute: No folder at './nope' ({Path.cwd() / 'nope'}).\n"


def test_precompute_cli_by_teacher_id_and_dataset_id_and_its_offline_error(hub_server, tmp_path):
    model, processor = tiny_llava()
    model.save_pretrained(tmp_path / "teacher")
    processor.save_pretrained(tmp_path / "teacher")
    hub_server.add_repo("org/tiny-llava", tmp_path / "teacher")
    push_shapes()
    argv = [sys.executable, "-m", "hf_lfi.cli", "precompute", "--teacher", "org/tiny-llava", "--dataset", "org/shapes"]
    argv += ["--split", "test_iid", "--out", str(tmp_path / "maps"), "--shard-size", "4", "--max-new-tokens", "4"]
    done = subprocess.run(argv, env=hub_server.env, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    maps = load_from_disk(str(tmp_path / "maps" / "dataset"))
    assert len(maps) == SPLITS["test_iid"] and set(maps["interaction_prompt"]) == {"classification_fg_bg"}

    offline = {**hub_server.env, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "empty_cache")}
    argv[argv.index("--out") + 1] = str(tmp_path / "offline")
    done = subprocess.run(argv, env=offline, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1] == (
        "hf-lfi precompute: 'org/shapes' is no local path and the Hugging Face cache has no copy of it, while "
        f"HF_HUB_OFFLINE=1 keeps the Hub ({hub_server.url}) offline: unset HF_HUB_OFFLINE to download it, or pass a "
        "local folder."
    )


def test_training_reports_an_unreachable_hub_in_one_line(hub_server, tmp_path):
    env = {**hub_server.env, "HF_ENDPOINT": closed_port_url()}
    argv = tiny_argv("org/shapes", tmp_path / "run")
    done = subprocess.run(
        [sys.executable, str(REPO / "training" / "run.py"), *argv], env=env, capture_output=True, text=True
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1] == (
        f"hf-lfi train: Cannot reach the Hub ({env['HF_ENDPOINT']}) for the dataset 'org/shapes' (ConnectError); "
        "set HF_HUB_OFFLINE=1 to load it from the local cache, which has no copy: pass a local folder."
    )
