"""The recipe (`hf_lfi.recipe`, `hf-lfi train`) end to end on a small image dataset (tiny models, CPU)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from synthetic import write_parquet_splits
from transformers import AutoImageProcessor, AutoModelForImageClassification

import hf_lfi
from hf_lfi import recipe

REPO = Path(__file__).resolve().parents[1]
TINY = "hidden_size=32,num_hidden_layers=2,num_attention_heads=4,intermediate_size=37,image_size=32,patch_size=8"


@pytest.fixture(scope="module")
def run():
    return recipe


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return str(write_parquet_splits(tmp_path_factory.mktemp("data")))


def tiny_argv(data, output_dir, *extra):
    return [
        "--dataset_name",
        data,
        "--teacher",
        "mask",
        "--mask_teacher_grid",
        "8",
        "--config_overrides",
        TINY,
        "--output_dir",
        str(output_dir),
        "--max_steps",
        "4",
        "--per_device_train_batch_size",
        "4",
        "--per_device_eval_batch_size",
        "12",
        "--learning_rate",
        "1e-3",
        "--logging_steps",
        "1",
        "--save_strategy",
        "no",
        "--report_to",
        "none",
        "--seed",
        "0",
        "--use_cpu",
        "true",
        *extra,
    ]


def log_history(output_dir):
    return json.loads((Path(output_dir) / "trainer_state.json").read_text())["log_history"]


def test_ivit_run_end_to_end(run, data, tmp_path):
    results = run.main(tiny_argv(data, tmp_path))
    assert {"validation_accuracy", "validation_top3_accuracy", "validation_loss", "train_loss"} <= set(results)
    logs = [entry for entry in log_history(tmp_path) if "loss" in entry]
    assert len(logs) == 4
    for key in ("alignment_loss", "task_loss", "gate_g1/layer_0", "gate_g2/layer_1"):
        assert key in logs[0]
    model = AutoModelForImageClassification.from_pretrained(tmp_path)
    assert isinstance(model, hf_lfi.IViTForImageClassification)
    assert model.config.id2label == {0: "red", 1: "green", 2: "blue"} and model.config.hidden_size == 32
    assert AutoImageProcessor.from_pretrained(tmp_path).size == {"height": 32, "width": 32}


def test_vit_baseline_is_one_flag_away(run, data, tmp_path):
    results = run.main(tiny_argv(data, tmp_path, "--method", "vit"))
    assert "validation_accuracy" in results
    model = AutoModelForImageClassification.from_pretrained(tmp_path)
    assert model.config.model_type == "vit" and model.config.hidden_size == 32 and model.config.num_labels == 3
    assert not any("alignment_loss" in entry for entry in log_history(tmp_path))


def test_vit_linear_probe_trains_only_the_head(run, data, tmp_path):
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    source = ViTForImageClassification(ViTConfig(**run.config_overrides(TINY), num_labels=5))
    source.save_pretrained(tmp_path / "vit")
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path / "vit")
    argv = tiny_argv(data, tmp_path / "out", "--method", "vit", "--model_name_or_path", str(tmp_path / "vit"))
    argv[argv.index("--config_overrides") : argv.index("--config_overrides") + 2] = []
    run.main([*argv, "--freeze_backbone", "true"])
    probe = AutoModelForImageClassification.from_pretrained(tmp_path / "out")
    assert probe.config.num_labels == 3
    for name, tensor in source.vit.state_dict().items():  # the backbone did not move
        torch.testing.assert_close(probe.vit.state_dict()[name], tensor, rtol=0, atol=0)
    with pytest.raises(ValueError, match="trains only the head of a pretrained backbone"):
        run.main(tiny_argv(data, tmp_path / "scratch", "--method", "vit", "--freeze_backbone", "true"))


def test_config_file_with_command_line_overrides(run, data, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(f"dataset_name: {data}\nmax_steps: 7\nalignment_weight: 0.5\nconfig_overrides: '{TINY}'\n")
    model_args, data_args, training_args = run.parse_arguments(["--config", str(config), "--max_steps", "2"])
    assert training_args.max_steps == 2 and training_args.alignment_weight == 0.5
    assert data_args.dataset_name == data and model_args.config_overrides == TINY
    assert training_args.do_train and training_args.do_eval
    config.write_text("max_stepz: 3\n")
    with pytest.raises(ValueError, match="Unknown keys in .*config.yaml: \\['max_stepz'\\]"):
        run.parse_arguments(["--config", str(config)])


def test_data_ratio_subsamples_training_rows(run, data, tmp_path):
    _, data_args, training_args = run.parse_arguments(
        ["--dataset_name", data, "--data_ratio", "0.25", "--output_dir", str(tmp_path)]
    )
    train, evaluated = run.load_data(data_args, training_args)
    assert len(train) == 6 and len(evaluated["validation"]) == 12


def _interaction_dataset(path, maps=None, labels=None):
    from synthetic import make_image_dataset

    dataset = make_image_dataset(8)
    if maps is not None:
        dataset = dataset.add_column("interaction_map", maps)
    if labels is not None:
        dataset = dataset.map(lambda row, i: {"label": labels[i]}, with_indices=True)
    dataset.save_to_disk(str(path))
    return str(path)


@pytest.mark.parametrize(
    "maps,labels,message",
    [
        (None, None, "no interaction map column 'interaction_map'"),
        ([[0.25] * 4] * 8, None, "must be 2-d"),
        ([[[float("nan"), 0.5], [0.25, 0.25]]] + [[[0.25, 0.25], [0.25, 0.25]]] * 7, None, "row 0 has NaN"),
        ([[[0.25, 0.25], [0.25, 0.25]]] * 8, [0, 1, 2, -1, 0, 1, 2, 0], "Labels out of range: \\[-1\\]"),
    ],
)
def test_bad_input_fails_before_training(run, data, tmp_path, maps, labels, message):
    interaction = _interaction_dataset(tmp_path / "interactions", maps, labels)
    output_dir = tmp_path / "out"
    argv = tiny_argv(data, output_dir, "--interaction_dataset", interaction, "--teacher", "dataset")
    with pytest.raises(ValueError, match=message):
        run.main(argv)
    assert not (output_dir / "trainer_state.json").exists() and not list(output_dir.glob("checkpoint-*"))


def test_hf_lfi_train_on_an_interaction_dataset_of_several_grids(data, tmp_path):
    """`hf-lfi train --teacher dataset` on maps that come on four grids (a Qwen-style teacher on images of different
    sizes): the run trains, each step the same as on the maps resampled to the student's 4 x 4 grid beforehand."""
    from hf_lfi.cli import main as cli_main
    from hf_lfi.training import resample_teacher_map

    generator = torch.Generator().manual_seed(0)
    grids = [(4, 6), (6, 4), (8, 8), (5, 3)] * 2
    maps = [torch.rand(rows, cols, generator=generator) for rows, cols in grids]
    maps = [m / m.sum() for m in maps]
    on_student_grid = [resample_teacher_map(m[None], (4, 4))[0] for m in maps]
    losses = []
    for name, teacher_maps in (("grids", maps), ("resampled", on_student_grid)):
        interaction = _interaction_dataset(tmp_path / f"{name}-maps", [m.tolist() for m in teacher_maps])
        argv = tiny_argv(data, tmp_path / name, "--interaction_dataset", interaction, "--teacher", "dataset")
        argv += ["--train_augmentation", "false"]  # a crop pools each map on its own grid: equal only without one
        assert cli_main(["train", *argv]) == 0
        losses.append([entry["alignment_loss"] for entry in log_history(tmp_path / name) if "alignment_loss" in entry])
    assert len(losses[0]) == 4 and losses[0][0] > 0
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


KILL_AT_STEP_3 = """
import os, signal, sys
from transformers import TrainerCallback
from hf_lfi import recipe
class Kill(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        if state.global_step == 3:
            os.kill(os.getpid(), signal.SIGKILL)
recipe.main(sys.argv[1:], callbacks=[Kill()])
"""


def test_killed_run_resumes_without_repeating_steps(run, data, tmp_path):
    from transformers import TrainerCallback

    common = ["--max_steps", "6", "--save_strategy", "steps", "--save_steps", "3", "--train_augmentation", "true"]
    run.main(tiny_argv(data, tmp_path / "straight", *common))
    straight = {entry["step"]: entry["loss"] for entry in log_history(tmp_path / "straight") if "loss" in entry}

    killed = subprocess.run(
        [sys.executable, "-c", KILL_AT_STEP_3, *tiny_argv(data, tmp_path / "resumed", *common)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert [p.name for p in (tmp_path / "resumed").glob("checkpoint-*")] == ["checkpoint-3"]

    class CountSteps(TrainerCallback):
        steps = 0

        def on_step_end(self, args, state, control, **kwargs):
            CountSteps.steps += 1

    run.main(
        tiny_argv(data, tmp_path / "resumed", *common, "--resume_from_checkpoint", "latest"), callbacks=[CountSteps()]
    )
    resumed = {entry["step"]: entry["loss"] for entry in log_history(tmp_path / "resumed") if "loss" in entry}
    assert CountSteps.steps == 3  # steps 4..6 only
    assert sorted(resumed) == list(range(1, 7))
    assert resumed[6] == pytest.approx(straight[6], abs=1e-5)


def test_resume_without_checkpoint_is_a_clear_error(run, data, tmp_path):
    with pytest.raises(ValueError, match="no complete checkpoint in"):
        run.main(tiny_argv(data, tmp_path, "--resume_from_checkpoint", "latest"))


def test_two_processes_match_one_process_with_the_same_global_batch(run, data, tmp_path):
    common = ["--max_steps", "3", "--train_augmentation", "true", "--do_eval", "false"]
    run.main(tiny_argv(data, tmp_path / "one", *common, "--per_device_train_batch_size", "4"))
    launched = subprocess.run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--main_process_port",
            "29533",
            "-m",
            "hf_lfi.recipe",
            *tiny_argv(data, tmp_path / "two", *common, "--per_device_train_batch_size", "2"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert "find_unused_parameters" not in launched.stderr  # DDP is told there are none to search for
    one = [e for e in log_history(tmp_path / "one") if "loss" in e]
    two = [e for e in log_history(tmp_path / "two") if "loss" in e]
    assert len(one) == len(two) == 3
    for a, b in zip(one, two):
        for key in ("loss", "alignment_loss", "task_loss"):
            assert b[key] == pytest.approx(a[key], abs=1e-4)


def test_converted_run_with_lora_saves_an_adapter(run, data, tmp_path):
    import peft
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    vit = ViTForImageClassification(ViTConfig(**run.config_overrides(TINY)))
    vit.save_pretrained(tmp_path / "vit")
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path / "vit")
    argv = tiny_argv(data, tmp_path / "out", "--model_name_or_path", str(tmp_path / "vit"), "--lora_rank", "4")
    argv[argv.index("--config_overrides") : argv.index("--config_overrides") + 2] = []
    results = run.main(argv)
    assert "validation_accuracy" in results
    assert (tmp_path / "out" / "adapter_config.json").exists()
    base = hf_lfi.IViTForImageClassification.from_vit(str(tmp_path / "vit"), num_labels=3)
    reloaded = peft.PeftModel.from_pretrained(base, tmp_path / "out")
    assert any("lora_A" in name for name, _ in reloaded.named_parameters())


@pytest.mark.parametrize("family, teacher", [("llava", "llava"), ("gemma3", "vlm")])
def test_online_vlm_teacher_run(run, data, tmp_path, family, teacher):
    """`--teacher vlm` (or its alias `llava`) loads any family the extractor supports from a folder with
    AutoModelForImageTextToText and maps every training batch."""
    from tiny_vlms import tiny_vlm

    vlm, processor = tiny_vlm(family)
    vlm.save_pretrained(tmp_path / "vlm")
    processor.save_pretrained(tmp_path / "vlm")
    argv = tiny_argv(
        data,
        tmp_path / "out",
        "--teacher",
        teacher,
        "--teacher_model_name_or_path",
        str(tmp_path / "vlm"),
        "--teacher_max_new_tokens",
        "4",
        "--max_steps",
        "2",
        "--eval_split",
        "",
    )
    run.main(argv)
    logs = [entry for entry in log_history(tmp_path / "out") if "loss" in entry]
    assert len(logs) == 2 and all("teacher_valid" in entry and "alignment_loss" in entry for entry in logs)
    assert json.loads((tmp_path / "out" / run.RUN_CONFIG_NAME).read_text())["data"]["teacher"] == "vlm"
    with pytest.raises(ValueError, match="--teacher vlm needs --teacher_model_name_or_path"):
        run.parse_arguments(tiny_argv(data, tmp_path / "none", "--teacher", teacher))


def test_continuing_an_ivit_follows_class_names(run, data, tmp_path):
    run.main(tiny_argv(data, tmp_path / "first", "--max_steps", "1"))
    first = hf_lfi.IViTForImageClassification.from_pretrained(tmp_path / "first")
    model_args, _, _ = run.parse_arguments(["--model_name_or_path", str(tmp_path / "first")])
    reordered = run.build_model(model_args, ["blue", "red", "green"])
    assert reordered.config.id2label == {0: "blue", 1: "red", 2: "green"}
    for new, old in enumerate([2, 0, 1]):
        assert torch.equal(reordered.classifier.weight[new], first.classifier.weight[old])
        assert reordered.classifier.bias[new] == first.classifier.bias[old]
    with pytest.raises(ValueError, match="was trained on the classes \\['red', 'green', 'blue'\\], the dataset has"):
        run.build_model(model_args, ["cat", "dog", "bird"])


def test_config_override_typos_are_refused(run, data, tmp_path):
    with pytest.raises(
        ValueError, match="Unknown --config_overrides keys \\['gate_granularty'\\]: not fields of IViTConfig"
    ):
        run.main(tiny_argv(data, tmp_path, "--config_overrides", TINY + ",gate_granularty=layer"))
    with pytest.raises(ValueError, match="item 'hidden_size' is not key=value"):
        run.main(tiny_argv(data, tmp_path, "--config_overrides", "hidden_size"))


@pytest.mark.parametrize(
    "text,message",
    [
        ("- max_steps\n- 3\n", "must be a mapping of flag names to values, got a list"),
        ("max_steps: [1, 2]\n", "max_steps must be a single value, got \\[1, 2\\]"),
        ("max_steps: ten\n", "max_steps must be int, got 'ten'"),
        ("test_splits: test_iid\n", "test_splits must be a list, got 'test_iid'"),
        (
            "method: vitt\n",
            "method must be one of \\['ivit', 'vit', 'idinov2', 'dinov2', 'isiglip', 'siglip', 'idetr', 'detr', 'icdetr', "
            "'cdetr'\\], got 'vitt'",
        ),
        ("mask_teacher_grid: 0\n", "--mask_teacher_grid must be >= 1, got 0"),
        ("max_train_samples: 0\n", "--max_train_samples must be >= 1, got 0"),
        ("crop_scale_min: 1.5\n", "--crop_scale_min is an area share in \\(0, 1\\], got 1.5"),
    ],
)
def test_config_file_errors_name_the_problem(run, tmp_path, text, message):
    config = tmp_path / "config.yaml"
    config.write_text(text)
    with pytest.raises(ValueError, match=message):
        run.parse_arguments(["--config", str(config), "--output_dir", str(tmp_path)])


def test_config_flag_without_a_value(run):
    with pytest.raises(ValueError, match="--config needs a value"):
        run.parse_arguments(["--config"])


@pytest.mark.parametrize("config", recipe.shipped_configs())
def test_shipped_configs_parse(run, config):
    model_args, _, training_args = run.parse_arguments(["--config", config, "--bf16", "false"])
    assert model_args.method in ("ivit", "idetr", "icdetr") and training_args.output_dir.startswith("runs/")


@pytest.mark.parametrize(
    "labels,message",
    [
        ([0.5, 1.0, 2.0] * 3, "label column 'label' holds floats \\(e.g. 0.5\\)"),
        (["cat", "dog", "cat"] * 3, "label column 'label' holds strings \\(e.g. 'cat'\\).*class_encode_column"),
    ],
)
def test_labels_that_are_not_class_ids(run, data, tmp_path, labels, message):
    from datasets import Dataset

    rows = Dataset.from_parquet(str(Path(data) / "train.parquet")).select(range(9)).remove_columns("label")
    rows.add_column("label", labels).to_parquet(str(tmp_path / "data" / "train.parquet"))
    rows.add_column("label", labels).to_parquet(str(tmp_path / "data" / "validation.parquet"))
    with pytest.raises(ValueError, match=message):
        run.main(tiny_argv(str(tmp_path / "data"), tmp_path / "out"))


def test_empty_train_split_and_unreadable_weights(run, data, tmp_path):
    from datasets import DatasetDict
    from synthetic import make_image_dataset

    empty = make_image_dataset(3).filter(lambda row: False)
    DatasetDict({"train": empty}).save_to_disk(str(tmp_path / "data"))
    with pytest.raises(ValueError, match="The training split 'train' of .* has no rows"):
        run.main(tiny_argv(str(tmp_path / "data"), tmp_path / "out", "--eval_split", "none"))
    hf_lfi.IViTForImageClassification(hf_lfi.IViTConfig(**run.config_overrides(TINY))).save_pretrained(
        tmp_path / "ivit"
    )
    (tmp_path / "ivit" / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match=f"Unreadable weights under {tmp_path / 'ivit'}"):
        run.main(tiny_argv(data, tmp_path / "out", "--model_name_or_path", str(tmp_path / "ivit")))
