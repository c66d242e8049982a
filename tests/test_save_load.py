import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import randomize_gates, tiny_ivit_config
from transformers import AutoConfig, AutoModel, AutoModelForImageClassification

from hf_lfi import IViTConfig, IViTForImageClassification, IViTModel


def trained_looking_model(**config_overrides) -> IViTForImageClassification:
    model = IViTForImageClassification(tiny_ivit_config(**config_overrides)).eval()
    randomize_gates(model)
    return model


def test_round_trip_through_folder(tmp_path):
    model = trained_looking_model(interaction_layers=[1], gate_hidden_size=2, freeze_backbone=True)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "ivit" and saved["interaction_layers"] == [1]
    assert saved["auto_map"] == {
        "AutoConfig": "configuration_ivit.IViTConfig",
        "AutoModelForImageClassification": "modeling_ivit.IViTForImageClassification",
    }

    loaded = IViTForImageClassification.from_pretrained(tmp_path).eval()
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    x = torch.randn(2, 3, 30, 30)
    out, out_loaded = model(x, output_interactions=True), loaded(x, output_interactions=True)
    torch.testing.assert_close(out_loaded.logits, out.logits, rtol=0, atol=0)
    torch.testing.assert_close(out_loaded.gates, out.gates, rtol=0, atol=0)
    # freeze_backbone is part of the config, so the reloaded model trains the same parameters
    assert {n for n, p in loaded.named_parameters() if p.requires_grad} == {
        n for n, p in model.named_parameters() if p.requires_grad
    }


def test_auto_classes_resolve_ivit(tmp_path):
    trained_looking_model().save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), IViTConfig)
    assert type(AutoModelForImageClassification.from_pretrained(tmp_path)) is IViTForImageClassification
    assert type(AutoModel.from_config(tiny_ivit_config())) is IViTModel


def test_trust_remote_code_without_hf_lfi(tmp_path):
    """The uploaded files (config, modeling, interaction attention with its gate math, blockwise path and kernel,
    conversion and its name rule, output recording) are enough on their own."""
    model = trained_looking_model()
    model.save_pretrained(tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").glob("*.py")) == [
        "blockwise_attention.py",
        "configuration_ivit.py",
        "conversion.py",
        "interaction_attention.py",
        "interaction_config.py",
        "modeling_ivit.py",
        "name_or_path.py",
        "output_recording.py",
        "pair_gates.py",
        "triton_attention.py",
    ]
    x = torch.randn(1, 3, 30, 30)
    torch.save(x, tmp_path / "x.pt")
    expected = model(x).logits
    script = f"""
import sys
sys.modules["hf_lfi"] = None  # make `import hf_lfi` fail, whatever is installed
import pytest
import torch
from transformers import AutoModelForImageClassification
model = AutoModelForImageClassification.from_pretrained({str(tmp_path / "ckpt")!r}, trust_remote_code=True).eval()
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
print(model(torch.load({str(tmp_path / "x.pt")!r})).logits.tolist())
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    logits = torch.tensor(json.loads(result.stdout.strip().splitlines()[-1]))
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-6)


def test_plain_vit_checkpoint_is_refused(tmp_path):
    from transformers import ViTConfig, ViTForImageClassification

    ViTForImageClassification(
        ViTConfig(
            image_size=30,
            patch_size=2,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=37,
        )
    ).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="not an I-ViT checkpoint.*from_vit"):
        IViTForImageClassification.from_pretrained(tmp_path)


def test_loading_info_is_still_available(tmp_path):
    trained_looking_model().save_pretrained(tmp_path)
    model, info = IViTForImageClassification.from_pretrained(tmp_path, output_loading_info=True)
    assert isinstance(model, IViTForImageClassification) and not info["missing_keys"]


def test_config_that_disagrees_with_the_weights_is_refused(tmp_path):
    trained_looking_model().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "interaction_layers": [1]}))
    with pytest.raises(
        ValueError,
        match=r"do not match its config.json \(IViTForImageClassification, interaction_layers \[1\]\): the checkpoint "
        r"holds weights config.json has no place for \(4\): \['vit.layers.0.attention.gate.bias'",
    ):
        IViTForImageClassification.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(config))
    from safetensors.torch import load_file, save_file

    weights = load_file(tmp_path / "model.safetensors")
    del weights["vit.layers.0.mlp.fc1.weight"]
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(
        ValueError,
        match=r"config.json describes weights the checkpoint lacks \(1\): \['vit.layers.0.mlp.fc1.weight'\]\.",
    ):
        IViTForImageClassification.from_pretrained(tmp_path)
    # in a checkpoint of the model's own class, a lost head is a disagreement too
    save_file(
        {k: v for k, v in weights.items() if not k.startswith("classifier.")},
        tmp_path / "model.safetensors",
        metadata={"format": "pt"},
    )
    with pytest.raises(
        ValueError, match=r"the checkpoint lacks \(3\): \['classifier.bias', 'classifier.weight', 'vit"
    ):
        IViTForImageClassification.from_pretrained(tmp_path)
