"""Students beyond ViT (issue 13): I-DINOv2 (with and without registers) and I-SigLIP, converted from their library
models; and the parent arguments every I-model keeps because it inherits the parent forwards."""

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import randomize_gates, run_attention, tiny_detr, tiny_vit
from test_run import TINY, log_history, tiny_argv
from transformers import (
    AutoModel,
    AutoModelForImageClassification,
    Dinov2Config,
    Dinov2ForImageClassification,
    Dinov2Model,
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersForImageClassification,
    SiglipConfig,
    SiglipForImageClassification,
    SiglipModel,
    SiglipVisionModel,
)
from transformers.modeling_outputs import BaseModelOutput

import hf_lfi
from hf_lfi import IDetrForObjectDetection, IDinov2ForImageClassification, ISiglipForImageClassification, recipe
from hf_lfi.modeling.conversion import is_interaction_parameter

SHAPE = dict(image_size=28, patch_size=7, hidden_size=32, num_hidden_layers=2, num_attention_heads=4)


def dinov2(registers: int = 0):
    if registers:
        config = Dinov2WithRegistersConfig(**SHAPE, num_register_tokens=registers, num_labels=3)
        return Dinov2WithRegistersForImageClassification(config).eval()
    return Dinov2ForImageClassification(Dinov2Config(**SHAPE, num_labels=3)).eval()


def siglip(kind: str = "classifier"):
    config = SiglipConfig(vision_config={**SHAPE, "intermediate_size": 37}, num_labels=3)
    if kind == "two-tower":
        return SiglipModel(config).eval()
    return SiglipForImageClassification(config).eval()


SOURCES = {  # name -> (source model, conversion, prefix tokens)
    "dinov2": (lambda: dinov2(), IDinov2ForImageClassification.from_dinov2, 1),
    "dinov2-registers": (lambda: dinov2(registers=2), IDinov2ForImageClassification.from_dinov2, 3),
    "siglip": (lambda: siglip(), ISiglipForImageClassification.from_siglip, 0),
}


def converted(name: str, **overrides):
    make, convert, _ = SOURCES[name]
    source = make()
    return source, convert(source, **overrides).eval()


@pytest.mark.parametrize("name", SOURCES)
def test_converted_student_reproduces_its_source_at_step_zero(name):
    source, model = converted(name)
    with torch.no_grad():
        for size in ((28, 28), (35, 42)):
            x = torch.randn(2, 3, *size)
            kwargs = {"interpolate_pos_encoding": True} if name == "siglip" else {}
            torch.testing.assert_close(model(x, **kwargs).logits, source(x, **kwargs).logits, atol=1e-4, rtol=0)
        out = model(torch.randn(2, 3, 28, 28), output_interactions=True)
    assert model.config.freeze_backbone and len(out.interaction_maps) == len(out.gates) == 2
    for student, gates in zip(out.interaction_maps, out.gates):
        assert student.shape == (2, 4, 4) and gates.shape == (2, 4, 2)
        torch.testing.assert_close(student.sum(dim=(1, 2)), torch.ones(2))


@pytest.mark.parametrize("name", SOURCES)
def test_student_map_drops_every_prefix_key(name):
    """CLS row (DINOv2) or mean of rows (SigLIP, no CLS) of C_AGT, heads averaged, without CLS and register keys."""
    _, model = converted(name)
    attention = next(m for m in model.modules() if hasattr(m, "interaction_q_proj"))
    randomize_gates(attention)
    with torch.no_grad():
        attention.interaction_q_proj.weight.normal_(std=0.3)
    prefix = SOURCES[name][2]
    hidden = torch.randn(2, prefix + 16, 32)
    _, _, student, _ = run_attention(attention, hidden, output_interactions=True)
    q = attention.interaction_q_proj(hidden).view(2, -1, 4, 8).transpose(1, 2).double()
    k = attention.k_proj(hidden).view(2, -1, 4, 8).transpose(1, 2).double()
    agt = torch.softmax(q @ k.transpose(-1, -2) / 8**0.5, dim=-1)
    rows = agt.mean(dim=2) if name == "siglip" else agt[:, :, 0]
    expected = rows.mean(dim=1)[:, prefix:]
    torch.testing.assert_close(student.double(), expected / expected.sum(-1, keepdim=True), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", SOURCES)
def test_only_interaction_parameters_and_head_train(name):
    _, model = converted(name, num_labels=5)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {
        n for n, _ in model.named_parameters() if is_interaction_parameter(n) or n.startswith("classifier.")
    }
    out = model(torch.randn(2, 3, 28, 28), labels=torch.tensor([0, 4]), output_interactions=True)
    (out.loss + out.interaction_maps[0].pow(2).sum()).backward()
    assert all((p.grad is not None) == (n in trainable) for n, p in model.named_parameters())
    report = hf_lfi.parameter_report(model.config)
    assert (
        report["overhead"]
        == report["expected_overhead"]
        == sum(p.numel() for n, p in model.named_parameters() if is_interaction_parameter(n))
    )


def test_conversion_from_headless_and_two_tower_sources_and_refusals(tmp_path):
    plain = dinov2()
    headless = IDinov2ForImageClassification.from_dinov2(Dinov2Model(plain.config).eval(), num_labels=7)
    assert headless.classifier.out_features == 7 and headless.config.num_register_tokens == 0
    two_tower = siglip("two-tower")
    model = ISiglipForImageClassification.from_siglip(two_tower, num_labels=4).eval()
    tower = ISiglipForImageClassification.from_siglip(two_tower.vision_model, num_labels=4).eval()
    x = torch.randn(1, 3, 28, 28)
    with torch.no_grad():  # SigLIP's attention-pool head comes along unchanged
        expected = two_tower.vision_model(x).pooler_output
        torch.testing.assert_close(model.vision_model(x).pooler_output, expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(tower.vision_model(x).pooler_output, expected, atol=1e-5, rtol=0)
    assert isinstance(two_tower.vision_model, SiglipVisionModel)
    with pytest.raises(ValueError, match="from_dinov2 expects a Dinov2ForImageClassification or Dinov2Model"):
        IDinov2ForImageClassification.from_dinov2(tiny_vit())
    tiny_vit().save_pretrained(tmp_path / "vit")
    with pytest.raises(ValueError, match="from_siglip expects a SigLIP checkpoint .*got model_type 'vit'"):
        ISiglipForImageClassification.from_siglip(tmp_path / "vit")
    plain.save_pretrained(tmp_path / "dinov2")
    from_folder = IDinov2ForImageClassification.from_dinov2(tmp_path / "dinov2").eval()
    with torch.no_grad():
        torch.testing.assert_close(from_folder(x).logits, plain(x).logits, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", SOURCES)
def test_save_load_auto_and_remote_code(name, tmp_path):
    _, model = converted(name)
    randomize_gates(model)
    model.save_pretrained(tmp_path / "ckpt")
    x = torch.randn(1, 3, 28, 28)
    torch.save(x, tmp_path / "x.pt")
    with torch.no_grad():
        expected = model(x, output_interactions=True)
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path / "ckpt").eval()
    assert type(loaded) is type(model) and type(AutoModel.from_config(model.config)).__name__.endswith("Model")
    assert {n for n, p in loaded.named_parameters() if p.requires_grad} == {
        n for n, p in model.named_parameters() if p.requires_grad
    }
    with torch.no_grad():
        out = loaded(x, output_interactions=True)
    torch.testing.assert_close(out.logits, expected.logits, rtol=0, atol=0)
    torch.testing.assert_close(out.interaction_maps, expected.interaction_maps, rtol=0, atol=0)
    script = (
        "import sys, torch\nsys.modules['hf_lfi'] = None\n"
        "from transformers import AutoModelForImageClassification\n"
        f"m = AutoModelForImageClassification.from_pretrained({str(tmp_path / 'ckpt')!r}, trust_remote_code=True).eval()\n"
        "assert type(m).__module__.startswith('transformers_modules'), type(m).__module__\n"
        f"with torch.no_grad(): print(m(torch.load({str(tmp_path / 'x.pt')!r})).logits.tolist())\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    remote = torch.tensor(json.loads(done.stdout.strip().splitlines()[-1]))
    torch.testing.assert_close(remote, expected.logits, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", hf_lfi.STUDENT_PRESET_NAMES)
def test_student_presets(name):
    config = hf_lfi.preset_config(name, num_labels=200)
    report = hf_lfi.parameter_report(config)
    assert (
        report["overhead"]
        == report["expected_overhead"]
        == 12 * (config.hidden_size**2 + config.hidden_size + 6 * config.num_attention_heads)
    )


def test_idetr_keeps_detrs_arguments():
    """Inherited forwards keep DETR's `inputs_embeds`, `encoder_outputs` and `decoder_inputs_embeds`."""
    detr = tiny_detr()
    model = IDetrForObjectDetection.from_detr(detr).eval()
    embeds, queries = torch.randn(2, 16, 32), torch.randn(2, 10, 32)
    with torch.no_grad():
        expected = detr(None, inputs_embeds=embeds, decoder_inputs_embeds=queries)
        out = model(None, inputs_embeds=embeds, decoder_inputs_embeds=queries, output_interactions=True)
        torch.testing.assert_close(out.logits, expected.logits, atol=1e-6, rtol=1e-5)
        assert out.interaction_maps[0].shape == out.interaction_mask.shape == (2, 4, 4)
        encoded = BaseModelOutput(last_hidden_state=out.encoder_last_hidden_state)
        again = model(None, inputs_embeds=embeds, decoder_inputs_embeds=queries, encoder_outputs=encoded)
        torch.testing.assert_close(again.logits, out.logits)


@pytest.mark.parametrize("method", ["idinov2", "dinov2", "isiglip", "siglip"])
def test_run_trains_new_students_and_their_baselines(method, tmp_path):
    run, data = recipe, str(__import__("synthetic").write_parquet_splits(tmp_path / "data"))
    overrides = TINY if "siglip" in method else TINY.replace(",intermediate_size=37", "")
    argv = tiny_argv(data, tmp_path / "out", "--method", method)
    argv[argv.index("--config_overrides") + 1] = overrides
    results = run.main(argv)
    assert "validation_accuracy" in results
    model = AutoModelForImageClassification.from_pretrained(tmp_path / "out")
    interactive = method.startswith("i")
    assert type(model).__name__.startswith("I") == interactive
    assert any("alignment_loss" in entry for entry in log_history(tmp_path / "out")) == interactive
