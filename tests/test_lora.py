import peft
import pytest
import torch
from conftest import tiny_vit

from hf_lfi import IViTForImageClassification
from hf_lfi.training.lora import add_lora


def test_lora_trains_adapters_interaction_parts_and_head_only(tmp_path):
    vit = tiny_vit()
    model = add_lora(IViTForImageClassification.from_vit(vit), rank=4)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(
        ("lora_" in name and ("q_proj" in name or "v_proj" in name)) or ".modules_to_save." in name
        for name in trainable
    )
    assert any("interaction_q_proj.modules_to_save" in n for n in trainable)
    assert any("gate.modules_to_save" in n for n in trainable)
    assert any("classifier.modules_to_save" in n for n in trainable)

    pixel_values = torch.randn(2, 3, 30, 30)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    out = model(pixel_values, labels=torch.tensor([0, 2]), output_interactions=True)
    (out.loss + sum(m.max() for m in out.interaction_maps)).backward()
    optimizer.step()
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed and changed <= trainable
    assert any("gate.modules_to_save" in n for n in changed) and any("lora_B" in n for n in changed)

    model.eval()
    expected = model(pixel_values).logits
    model.save_pretrained(tmp_path)
    assert (tmp_path / "adapter_config.json").exists() and (tmp_path / "adapter_model.safetensors").exists()
    reloaded = peft.PeftModel.from_pretrained(IViTForImageClassification.from_vit(vit), tmp_path).eval()
    torch.testing.assert_close(reloaded(pixel_values).logits, expected)


def test_lora_needs_a_positive_rank():
    with pytest.raises(ValueError, match="LoRA rank must be positive"):
        add_lora(IViTForImageClassification.from_vit(tiny_vit()), rank=0)
