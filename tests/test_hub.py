"""Publishing: model cards, `hf-lfi publish`, and loading by repo id from the offline HF cache (every student:
test_publish.py)."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import hub_cache_snapshot, tiny_detr_kwargs, tiny_ivit_config, tiny_segmentation_kwargs
from huggingface_hub import ModelCard
from PIL import Image
from synthetic import make_image_dataset, write_parquet_splits
from test_run import tiny_argv
from transformers import AutoModelForImageClassification

import hf_lfi
from hf_lfi import cli, recipe
from hf_lfi.interactions import MaskInteractionMapFn

REPO = Path(__file__).resolve().parents[1]


def test_model_card_metadata_parses_back(tmp_path):
    model = hf_lfi.IViTForImageClassification(tiny_ivit_config())
    card = hf_lfi.hub.model_card(
        model,
        "org/i-vit-tiny",
        results={
            "validation_accuracy": 0.9,
            "test_iid_accuracy": 0.8,
            "test_iid_top5_accuracy": 0.97,
            "train_loss": 1.2,
        },
        baseline_results={"validation_accuracy": 0.85, "test_iid_accuracy": 0.7},
        dataset="org/emoji",
        interaction_dataset="org/emoji-lfi",
        teacher={"teacher": "mask teacher"},
        base_model="google/vit-base-patch16-224",
    )
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    data = loaded.data
    assert data.library_name == "transformers" and data.pipeline_tag == "image-classification"
    assert data.base_model == "google/vit-base-patch16-224" and data.datasets == ["org/emoji", "org/emoji-lfi"]
    assert {"hf_lfi", "ivit"} <= set(data.tags)
    results = {(r.dataset_split, r.metric_type): r.metric_value for r in data.eval_results}
    assert results == {
        ("validation", "accuracy"): 0.9,
        ("test_iid", "accuracy"): 0.8,
        ("test_iid", "top5_accuracy"): 0.97,
    }
    assert (
        "| validation | 0.9000 |  | 0.8500 |  |" in loaded.text
        and "| test_iid | 0.8000 | 0.9700 | 0.7000 |  |" in loaded.text
    )
    report = hf_lfi.parameter_report(model.config)
    assert f"{report['ivit_parameters'] / 1e6:.2f} M vs {report['vit_parameters'] / 1e6:.2f} M" in loaded.text
    assert "| teacher | mask teacher |" in loaded.text and "81.52" in loaded.text


@pytest.mark.parametrize(
    "model_class, config, task, auto_class",
    [
        (
            hf_lfi.IDetrForSegmentation,
            hf_lfi.IDetrConfig(**tiny_segmentation_kwargs()),
            "image-segmentation",
            "AutoModelForImageSegmentation",
        ),
        (
            hf_lfi.IConditionalDetrForObjectDetection,
            hf_lfi.IConditionalDetrConfig(**tiny_detr_kwargs()),
            "object-detection",
            "AutoModelForObjectDetection",
        ),
    ],
)
def test_cards_of_dense_models_name_their_task_and_count_their_own_parameters(model_class, config, task, auto_class):
    model = model_class(config)
    card = hf_lfi.hub.model_card(model, "org/tiny", base_model="")
    assert card.data.pipeline_tag == task and f"{auto_class}.from_pretrained" in card.text
    report = hf_lfi.parameter_report(config, model_class)
    assert report["ivit_parameters"] == sum(p.numel() for p in model.parameters())
    assert report["overhead"] == report["expected_overhead"] > 0
    assert f"{report['ivit_parameters'] / 1e6:.2f} M vs {report['vit_parameters'] / 1e6:.2f} M" in card.text


@pytest.fixture(scope="module")
def finished_runs(tmp_path_factory):
    """A tiny I-ViT run that tracked its best checkpoint, and its ViT baseline."""
    root = tmp_path_factory.mktemp("runs")
    data = str(write_parquet_splits(root / "data"))
    run = recipe
    best = [
        "--eval_strategy",
        "steps",
        "--eval_steps",
        "2",
        "--save_strategy",
        "steps",
        "--save_steps",
        "2",
        "--load_best_model_at_end",
        "true",
        "--metric_for_best_model",
        "accuracy",
    ]
    run.main(tiny_argv(data, root / "ivit", *best))
    run.main(tiny_argv(data, root / "vit", "--method", "vit"))
    return root


def test_publish_dry_run_stages_model_code_metrics_and_card(finished_runs, tmp_path):
    assert (
        cli.main(
            [
                "publish",
                str(finished_runs / "ivit"),
                "--repo-id",
                "org/i-vit-tiny",
                "--baseline",
                str(finished_runs / "vit"),
                "--dry-run",
                str(tmp_path / "stage"),
            ]
        )
        == 0
    )
    files = sorted(p.name for p in (tmp_path / "stage").iterdir())
    assert files == [
        "README.md",
        "all_results.json",
        "blockwise_attention.py",
        "config.json",
        "configuration_ivit.py",
        "conversion.py",
        "interaction_attention.py",
        "interaction_config.py",
        "interaction_maps.png",
        "model.safetensors",
        "modeling_ivit.py",
        "name_or_path.py",
        "output_recording.py",
        "pair_gates.py",
        "preprocessor_config.json",
        "triton_attention.py",
    ]
    config = json.loads((tmp_path / "stage" / "config.json").read_text())
    assert config["auto_map"]["AutoModelForImageClassification"] == "modeling_ivit.IViTForImageClassification"
    state = json.loads((finished_runs / "ivit" / "trainer_state.json").read_text())
    assert state["best_model_checkpoint"]
    card = ModelCard.load(tmp_path / "stage" / "README.md")
    results = json.loads((finished_runs / "ivit" / "all_results.json").read_text())
    baseline = json.loads((finished_runs / "vit" / "all_results.json").read_text())
    assert f"| validation | {results['validation_accuracy']:.4f} |" in card.text
    assert f"{baseline['validation_accuracy']:.4f}" in card.text
    assert "mask teacher (column 'mask')" in card.text
    assert AutoModelForImageClassification.from_pretrained(tmp_path / "stage").config.num_labels == 3
    # the figure of teacher vs student maps, referenced from the card's text
    assert "![Teacher and student maps, and the gates per layer](interaction_maps.png)" in card.text
    assert "The first 4 images of the validation split" in card.text and "a mask teacher built from" in card.text
    with Image.open(tmp_path / "stage" / "interaction_maps.png") as figure:
        assert figure.size[0] > 600 and figure.size[1] > 600


def test_publish_failures_are_one_clear_message(finished_runs, tmp_path):
    env = {**os.environ, "HF_TOKEN": "", "HF_HOME": str(tmp_path / "home")}
    no_token = subprocess.run(
        [sys.executable, "-m", "hf_lfi.cli", "publish", str(finished_runs / "ivit"), "--repo-id", "org/x"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert (
        no_token.returncode == 2 and "No Hugging Face token" in no_token.stderr and "Traceback" not in no_token.stderr
    )
    unreachable = subprocess.run(
        [sys.executable, "-m", "hf_lfi.cli", "publish", str(finished_runs / "ivit"), "--repo-id", "org/x"],
        capture_output=True,
        text=True,
        env={**env, "HF_TOKEN": "hf_test", "HF_ENDPOINT": "http://127.0.0.1:9"},
    )
    assert unreachable.returncode == 2 and "Traceback" not in unreachable.stderr
    assert "hf-lfi publish: Could not upload" in unreachable.stderr and "org/x" in unreachable.stderr
    assert cli.main(["publish", str(tmp_path), "--repo-id", "org/x", "--dry-run", str(tmp_path / "s")]) == 2


def test_models_do_not_render_cards_themselves():
    """One route renders cards (`hub.model_card`, used by `hf-lfi publish` and the trainer's `push_to_hub`): the
    models' own `push_to_hub` is the library's, and modeling imports nothing from the hub side."""
    from transformers import PreTrainedModel

    for student in hf_lfi.STUDENTS:
        for model_class in student.task_models.values():
            assert model_class.push_to_hub is PreTrainedModel.push_to_hub
    modeling = Path(hf_lfi.modeling.__file__).parent
    hub_imports = re.compile(r"^\s*(from|import)\s+(hf_lfi\.hub|\.\.hub)\b|^\s*from\s+\.\.\s+import\s+.*\bhub\b", re.M)
    assert not [p.name for p in modeling.glob("*.py") if hub_imports.search(p.read_text())]


def _datasets_cache(home: Path, repo_id: str, parquet: Path) -> None:
    """What `load_dataset(repo_id)` leaves in the datasets cache after an online load (builder `org___name`)."""
    from datasets.packaged_modules.parquet.parquet import Parquet

    namespace, name = repo_id.split("/")
    builder = Parquet(
        cache_dir=str(home / "datasets"),
        dataset_name=f"{namespace}___{name}",
        config_name="default",
        data_files={"train": [str(parquet)]},
        hash="0" * 40,
    )
    builder.download_and_prepare()
    root = home / "datasets" / f"{namespace}___{name}"
    (next(root.glob("default-*"))).rename(root / "default")
    for file in root.rglob(f"{namespace}___{name}-*"):
        file.rename(file.with_name(file.name.replace(f"{namespace}___", "")))


def test_loading_by_repo_id_from_the_offline_cache(tmp_path):
    home = tmp_path / "home"
    model = hf_lfi.IViTForImageClassification(tiny_ivit_config()).eval()
    model.save_pretrained(tmp_path / "model")
    hub_cache_snapshot(home, "model", "org/i-vit-tiny", tmp_path / "model")
    dataset = make_image_dataset(6).map(MaskInteractionMapFn(grid=(8, 8)), batched=True)
    dataset.to_parquet(str(tmp_path / "train.parquet"))
    _datasets_cache(home, "org/emoji-lfi", tmp_path / "train.parquet")

    expected = model(pixel_values=torch.ones(1, 3, 30, 30)).logits[0].tolist()
    check = (
        "import sys, torch\n"
        "{setup}\n"
        "from transformers import AutoModelForImageClassification\n"
        "m = AutoModelForImageClassification.from_pretrained('org/i-vit-tiny'{remote}).eval()\n"
        "print(type(m).__module__, m(pixel_values=torch.ones(1, 3, 30, 30)).logits[0].tolist())\n"
    )
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    for setup, remote in (("import hf_lfi", ""), ("sys.modules['hf_lfi'] = None", ", trust_remote_code=True")):
        done = subprocess.run(
            [sys.executable, "-c", check.format(setup=setup, remote=remote)],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        module, logits = done.stdout.strip().split(" ", 1)
        assert json.loads(logits) == pytest.approx(expected, abs=1e-6)
        assert module.startswith("hf_lfi") == (setup == "import hf_lfi")
    load = "from datasets import load_dataset; d = load_dataset('org/emoji-lfi')['train']; print(len(d), d.features['interaction_map'].feature.feature.dtype)"
    done = subprocess.run([sys.executable, "-c", load], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["6", "float16"]


def test_publish_refuses_what_it_would_publish_wrongly(finished_runs, tmp_path, capsys):
    run_dir = tmp_path / "ivit"
    shutil.copytree(finished_runs / "ivit", run_dir)
    stage = ["--repo-id", "org/x", "--dry-run"]
    # a dry run into the run folder would overwrite the run
    assert cli.main(["publish", str(run_dir), *stage, str(run_dir / "stage")]) == 2
    assert "is inside the run" in capsys.readouterr().err
    # a baseline run: one message, no traceback
    assert cli.main(["publish", str(finished_runs / "vit"), *stage, str(tmp_path / "s1")]) == 2
    error = capsys.readouterr().err
    assert "is a 'vit' model: `hf-lfi publish` publishes the runs of hf_lfi students" in error
    assert "Publish the ivit run and pass this one as --baseline" in error
    # a LoRA run folder holds an adapter, not a model
    (tmp_path / "lora").mkdir()
    (tmp_path / "lora" / "adapter_config.json").write_text("{}")
    assert cli.main(["publish", str(tmp_path / "lora"), *stage, str(tmp_path / "s2")]) == 2
    assert "is a LoRA run: it holds an adapter" in capsys.readouterr().err
    # best_model_checkpoint naming a folder outside the run
    outside = tmp_path / "elsewhere" / "checkpoint-9"
    shutil.copytree(finished_runs / "vit", outside)
    state = json.loads((run_dir / "trainer_state.json").read_text())
    (run_dir / "trainer_state.json").write_text(json.dumps({**state, "best_model_checkpoint": str(outside)}))
    assert cli.main(["publish", str(run_dir), *stage, str(tmp_path / "s3")]) == 2
    assert "is not a checkpoint folder of" in capsys.readouterr().err


def test_card_of_a_from_scratch_run_with_local_data_names_no_base_model_and_no_path(finished_runs, tmp_path, capsys):
    assert (
        cli.main(["publish", str(finished_runs / "ivit"), "--repo-id", "org/x", "--dry-run", str(tmp_path / "stage")])
        == 0
    )
    assert "dry run: staged" in capsys.readouterr().out
    card = ModelCard.load(tmp_path / "stage" / "README.md")
    assert card.data.base_model is None and "| base model | trained from scratch |" in card.text
    assert str(finished_runs) not in str(card.data.to_dict())  # model-index: the data folder by its name, no path
    assert {r.dataset_type for r in card.data.eval_results} == {"data"} and "| data | data |" in card.text
