"""The paper's GPU protocol, the shipped config `ivit_s_tinyimagenet` (`hf-lfi train --config ivit_s_tinyimagenet`),
runs as written at a tiny shape on CPU: a tiny ViT checkpoint stands for WinKawaks/vit-small-patch16-224, a tiny
dataset in zh-plus/tiny-imagenet's layout (`train` / `valid`, image + label) for TinyImageNet, and the interaction
dataset is precomputed by the map function `hf-lfi precompute` runs, over a tiny random LLaVA whose answer is forced (a
random one names no class). Only what binds the run to a GPU and to the real sizes is overridden."""

import json

from synthetic import CLASS_NAMES, make_image_dataset
from tiny_llava import tiny_llava
from transformers import AutoModelForImageClassification, ViTConfig, ViTForImageClassification, ViTImageProcessor

import hf_lfi
from hf_lfi import recipe
from hf_lfi.interactions import InteractionExtractor, interaction_map_fn

# what a CPU and a tiny shape need; everything else (teacher, eval split, optimiser, schedule, evaluation and
# checkpointing per epoch, best model at the end) is the file's
CPU_FLAGS = [
    "--num_train_epochs",
    "2",
    "--per_device_train_batch_size",
    "4",
    "--per_device_eval_batch_size",
    "8",
    "--bf16",
    "false",
    "--dataloader_num_workers",
    "0",
    "--report_to",
    "none",
    "--use_cpu",
    "true",
]


def test_tinyimagenet_protocol_with_a_precomputed_vlm_teacher(tmp_path):
    extractor = InteractionExtractor(*tiny_llava(), max_new_tokens=6)
    train, valid = make_image_dataset(16, seed=0), make_image_dataset(8, seed=1)
    answers = ["{'foreground': {green}, 'background': {sky}}"] * len(train)
    (tmp_path / "tiny-imagenet").mkdir()
    train.to_parquet(str(tmp_path / "tiny-imagenet" / "train.parquet"))
    valid.to_parquet(str(tmp_path / "tiny-imagenet" / "valid.parquet"))
    map_fn = interaction_map_fn(extractor, class_names=CLASS_NAMES, answer_column="answer")  # the answer forced
    answered = train.add_column("answer", answers)
    maps = answered.map(map_fn, batched=True, batch_size=4, features=map_fn.output_features(answered.features))
    maps.save_to_disk(str(tmp_path / "maps"))

    vit = ViTForImageClassification(
        ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, image_size=32)
    )
    vit.save_pretrained(tmp_path / "vit-small")
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path / "vit-small")
    output_dir = tmp_path / "ivit-s"
    argv = ["--config", "ivit_s_tinyimagenet", "--model_name_or_path", str(tmp_path / "vit-small")]
    argv += [
        "--dataset_name",
        str(tmp_path / "tiny-imagenet"),
        "--interaction_dataset",
        str(tmp_path / "maps"),
    ]
    results = recipe.main([*argv, "--output_dir", str(output_dir), *CPU_FLAGS])

    assert 0 <= results["valid_accuracy"] <= 1
    state = json.loads((output_dir / "trainer_state.json").read_text())
    assert state["best_model_checkpoint"] is not None  # evaluation and checkpoints per epoch, best model reloaded
    assert any("alignment_loss" in entry for entry in state["log_history"])
    model = AutoModelForImageClassification.from_pretrained(output_dir)
    assert isinstance(model, hf_lfi.IViTForImageClassification) and model.config.freeze_backbone
