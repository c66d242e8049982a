"""Loading across heads, as transformers loads its models: a base model from a task checkpoint (the head dropped) and a
task model from a base checkpoint (a new head initialised), by folder and by Hub id, for every student; and the
checkpoints that stay refused (weights that disagree with their config.json, plain checkpoints)."""

import json
import os
import subprocess
import sys

import huggingface_hub
import pytest
import torch
from conftest import hub_cache_snapshot, randomize_gates, tiny_ivit_config, tiny_student_config
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoModelForImageClassification

import hf_lfi
from hf_lfi.modeling.conversion import base_model_path, is_interaction_parameter
from hf_lfi.students import CLASSIFICATION, TASKS, student_for_method

STUDENT_TASKS = [(student, task) for student in hf_lfi.STUDENTS for task in student.tasks]
IDS = [f"{student.method}-{task}" for student, task in STUDENT_TASKS]
IVIT = student_for_method("ivit")


def trained_task_model(student, task: str):
    """A tiny task model of the registry's `student` with non-trivial gates, its backbone frozen."""
    config = tiny_student_config(student, task)
    config.freeze_backbone = True
    model = student.model_class(task)(config).eval()
    randomize_gates(model)
    return model


def pixel_inputs(task: str) -> dict:
    """A batch for a tiny student of `task`: 28 px images, or for the DETR family two padded images."""
    if task == CLASSIFICATION:
        return {"pixel_values": torch.randn(2, 3, 28, 28)}
    pixel_mask = torch.ones(2, 64, 48, dtype=torch.long)
    pixel_mask[1, :, 32:] = 0
    return {"pixel_values": torch.randn(2, 3, 64, 48), "pixel_mask": pixel_mask}


def base_outputs(model, inputs: dict) -> dict:
    """What the base model computes: hidden states, student maps, gates (and the feature mask of the DETR family)."""
    with torch.no_grad():
        out = model(**inputs, output_interactions=True)
    fields = ("last_hidden_state", "encoder_last_hidden_state", "interaction_maps", "gates", "interaction_mask")
    return {field: out[field] for field in fields if out.get(field) is not None}


def load(auto_class, checkpoint, by, tmp_path, **kwargs):
    """`auto_class.from_pretrained` from the folder, or by Hub id: from the offline HF cache, or from the test Hub
    (`by` is then the `hub_server`)."""
    if by == "folder":
        return auto_class.from_pretrained(checkpoint, output_loading_info=True, **kwargs)
    repo_id = f"org/{checkpoint.name}"
    if by == "offline cache":
        hub_cache_snapshot(tmp_path / "home", "model", repo_id, checkpoint)
        kwargs["cache_dir"] = tmp_path / "home" / "hub"
    else:
        commit = by.add_repo(repo_id, checkpoint)
    loaded = auto_class.from_pretrained(repo_id, output_loading_info=True, **kwargs)
    if by != "offline cache":  # the weights came from the server (an LFS file: resolved, then fetched from its "CDN")
        assert ("HEAD", f"/{repo_id}/resolve/{commit}/model.safetensors") in by.requests
    return loaded


@pytest.mark.parametrize("by", ["folder", "offline cache", "hub server"])
@pytest.mark.parametrize("student, task", STUDENT_TASKS, ids=IDS)
def test_base_from_task_checkpoint_and_task_from_base_checkpoint(student, task, by, tmp_path, monkeypatch, request):
    if by == "offline cache":
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # what HF_HUB_OFFLINE=1 sets at import
    if by == "hub server":
        by = request.getfixturevalue("hub_server")
    trained = trained_task_model(student, task)
    inputs = pixel_inputs(task)
    path = base_model_path(trained)
    base_keys = set(trained.get_submodule(path).state_dict())
    head_keys = {k for k in trained.state_dict() if not k.startswith(f"{path}.")}
    trained.save_pretrained(tmp_path / "task")

    # AutoModel on a task checkpoint: the base model, the head dropped, the parts the task model lacks new
    base, info = load(AutoModel, tmp_path / "task", by, tmp_path)
    assert type(base) is student.base_model is type(trained.get_submodule(path))
    new_parts = set(base.state_dict()) - base_keys  # ViT's pooler (the classifier's ViT has none)
    assert info["unexpected_keys"] == head_keys and info["missing_keys"] == new_parts
    expected = base_outputs(trained.get_submodule(path), inputs)
    assert {"interaction_maps", "gates"} <= set(expected)
    torch.testing.assert_close(base_outputs(base, inputs), expected, rtol=0, atol=0)

    # the task's Auto class on a base checkpoint: a new head (here for 5 labels), the base model's weights kept
    base.save_pretrained(tmp_path / "base")
    assert set(load_file(tmp_path / "base" / "model.safetensors")) == set(base.state_dict())  # its own layout
    model, info = load(TASKS[task].auto(), tmp_path / "base", by, tmp_path, num_labels=5)
    assert type(model) is type(trained) and model.config.num_labels == 5
    assert info["missing_keys"] == head_keys and info["unexpected_keys"] == new_parts
    torch.testing.assert_close(base_outputs(model.get_submodule(path), inputs), expected, rtol=0, atol=0)
    # the new head trains with the interaction parameters (freeze_backbone), the rest stays frozen
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters() if is_interaction_parameter(n) or n in head_keys}


def test_automodel_by_repo_id_with_the_hub_offline(tmp_path):
    """The headline usage, in a fresh interpreter with `HF_HUB_OFFLINE=1`: `AutoModel.from_pretrained(repo_id)` on a
    saved I-ViT classifier returns the I-ViT base model with its interaction maps and gates."""
    model = trained_task_model(IVIT, CLASSIFICATION)
    model.save_pretrained(tmp_path / "i-vit-tiny")
    hub_cache_snapshot(tmp_path / "home", "model", "org/i-vit-tiny", tmp_path / "i-vit-tiny")
    torch.save(x := torch.randn(1, 3, 28, 28), tmp_path / "x.pt")
    expected = base_outputs(model.vit, {"pixel_values": x})
    script = f"""
import torch, hf_lfi
from transformers import AutoModel
model = AutoModel.from_pretrained("org/i-vit-tiny")
out = model(torch.load({str(tmp_path / "x.pt")!r}), output_interactions=True)
torch.save({{"type": type(model).__name__, **{{k: out[k] for k in ("last_hidden_state", "interaction_maps", "gates")}}}},
           {str(tmp_path / "out.pt")!r})
"""
    env = {**os.environ, "HF_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    out = torch.load(tmp_path / "out.pt")
    assert out.pop("type") == "IViTModel"
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def edit_config(folder, **values):
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **values}))


def test_backbone_and_interaction_weights_that_disagree_with_the_config_stay_refused_across_heads(tmp_path):
    trained_task_model(IVIT, CLASSIFICATION).save_pretrained(tmp_path / "task")
    AutoModel.from_pretrained(tmp_path / "task").save_pretrained(tmp_path / "base")

    # config.json names fewer interaction layers than the checkpoint has weights for
    edit_config(tmp_path / "task", interaction_layers=[1])
    with pytest.raises(
        ValueError,
        match=r"do not match its config.json \(IViTModel, interaction_layers \[1\]\): the checkpoint holds weights "
        r"config.json has no place for \(4\): \['vit.layers.0.attention.gate.bias'",
    ):
        AutoModel.from_pretrained(tmp_path / "task")
    # ... or others, on more layers
    edit_config(tmp_path / "base", interaction_layers=[0, 2], num_hidden_layers=3)
    with pytest.raises(
        ValueError,
        match=r"config.json describes weights the checkpoint lacks \(20\): \['vit.layers.2.attention.gate.bias', "
        r".*the checkpoint holds weights config.json has no place for \(4\): \['layers.1.attention.gate.bias'",
    ):
        AutoModelForImageClassification.from_pretrained(tmp_path / "base")
    # the checkpoint has a backbone layer config.json does not describe
    edit_config(tmp_path / "base", interaction_layers=[0], num_hidden_layers=1)
    with pytest.raises(
        ValueError, match=r"has no place for \(20\): \['layers.1.attention.gate.bias'.*'layers.1.attention.k"
    ):
        AutoModelForImageClassification.from_pretrained(tmp_path / "base")
    edit_config(tmp_path / "base", interaction_layers=[0, 1], num_hidden_layers=2)
    edit_config(tmp_path / "task", interaction_layers=[0], num_hidden_layers=1)
    with pytest.raises(ValueError, match=r"has no place for \(20\): \['vit.layers.1.attention.gate.bias'"):
        AutoModel.from_pretrained(tmp_path / "task")

    # a lost backbone tensor
    weights = load_file(tmp_path / "base" / "model.safetensors")
    save_file(
        {k: v for k, v in weights.items() if k != "layers.0.mlp.fc1.weight"},
        tmp_path / "base" / "model.safetensors",
        metadata={"format": "pt"},
    )
    with pytest.raises(
        ValueError, match=r"the checkpoint lacks \(1\): \['vit.layers.0.mlp.fc1.weight'\]\. Fix config.json"
    ):
        AutoModelForImageClassification.from_pretrained(tmp_path / "base")

    # mis-shaped interaction weights, even with ignore_mismatched_sizes (it re-initialises heads only)
    edit_config(tmp_path / "task", interaction_layers=[0, 1], num_hidden_layers=2, gate_hidden_size=4)
    for ignore in (False, True):
        with pytest.raises(
            ValueError,
            match=r"the checkpoint lacks \(4\): \['layers.0.attention.gate.hidden_bias', .*; shapes differ, checkpoint vs "
            r"config.json \(2\): \['layers.0.attention.gate.weight: \(4, 2, 2\) vs \(4, 2, 4\)'",
        ):
            AutoModel.from_pretrained(tmp_path / "task", ignore_mismatched_sizes=ignore)


def test_heads_of_another_shape_need_ignore_mismatched_sizes(tmp_path):
    trained_task_model(IVIT, CLASSIFICATION).save_pretrained(tmp_path / "task")
    with pytest.raises(ValueError, match=r"\['classifier.bias: \(3,\) vs \(5,\)'.*ignore_mismatched_sizes=True"):
        AutoModelForImageClassification.from_pretrained(tmp_path / "task", num_labels=5)
    model, info = AutoModelForImageClassification.from_pretrained(
        tmp_path / "task", num_labels=5, ignore_mismatched_sizes=True, output_loading_info=True
    )
    assert model.classifier.out_features == 5 and {k for k, *_ in info["mismatched_keys"]} == {
        "classifier.weight",
        "classifier.bias",
    }


def test_plain_checkpoints_are_refused_across_heads(tmp_path):
    from transformers import ViTForImageClassification, ViTModel

    plain = tiny_ivit_config().to_vit_config()
    ViTForImageClassification(plain).save_pretrained(tmp_path / "task")
    ViTModel(plain).save_pretrained(tmp_path / "base")
    with pytest.raises(ValueError, match="not an I-ViT checkpoint.*IViTForImageClassification.from_vit"):
        hf_lfi.IViTModel.from_pretrained(tmp_path / "task")
    with pytest.raises(ValueError, match="not an I-ViT checkpoint.*IViTForImageClassification.from_vit"):
        hf_lfi.IViTForImageClassification.from_pretrained(tmp_path / "base")
