import pytest
import torch
from conftest import tiny_ivit_config, tiny_vit
from transformers import BertConfig, BertModel, DeiTConfig, DeiTForImageClassification, ViTModel

from hf_lfi import IViTForImageClassification
from hf_lfi.modeling.conversion import is_interaction_parameter


@pytest.mark.parametrize("interaction_layers", [None, [0]])
def test_converted_logits_equal_vit_logits(interaction_layers):
    vit = tiny_vit()
    model = IViTForImageClassification.from_vit(vit, interaction_layers=interaction_layers).eval()
    pixel_values = torch.randn(3, 3, 30, 30)
    with torch.no_grad():
        torch.testing.assert_close(model(pixel_values).logits, vit(pixel_values).logits, atol=1e-4, rtol=0)
        torch.testing.assert_close(
            model(torch.randn(1, 3, 36, 40), interpolate_pos_encoding=True).logits.shape, torch.Size([1, 3])
        )
    assert model.config.freeze_backbone and model.config.model_type == "ivit"


def test_conversion_from_folder_and_headless_vit(tmp_path):
    vit = tiny_vit()
    vit.save_pretrained(tmp_path / "vit")
    model = IViTForImageClassification.from_vit(tmp_path / "vit").eval()
    x = torch.randn(2, 3, 30, 30)
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, vit(x).logits, atol=1e-4, rtol=0)

    backbone = ViTModel(vit.config, add_pooling_layer=True).eval()
    model = IViTForImageClassification.from_vit(backbone, num_labels=7).eval()
    assert model.classifier.out_features == 7 and model.config.num_labels == 7
    with torch.no_grad():
        torch.testing.assert_close(model.vit(x).last_hidden_state, backbone(x).last_hidden_state, atol=1e-4, rtol=0)


def test_one_step_changes_only_interaction_parameters_and_head():
    vit = tiny_vit()
    model = IViTForImageClassification.from_vit(vit, num_labels=5).train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n in before if is_interaction_parameter(n) or n.startswith("classifier.")}

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    out = model(torch.randn(4, 3, 30, 30), labels=torch.tensor([0, 1, 2, 4]), output_interactions=True)
    (out.loss + sum(m.pow(2).sum() for m in out.interaction_maps)).backward()
    optimizer.step()

    for name, parameter in model.named_parameters():
        if name in trainable:
            assert not torch.equal(parameter, before[name]), f"{name} did not train"
        else:
            assert parameter.grad is None, name
            assert torch.equal(parameter, before[name]), f"frozen {name} changed"


def test_from_scratch_trains_everything():
    model = IViTForImageClassification(tiny_ivit_config())
    assert all(p.requires_grad for p in model.parameters())


def test_not_a_vit_is_refused(tmp_path):
    deit = DeiTForImageClassification(
        DeiTConfig(
            image_size=30,
            patch_size=2,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=4,
            intermediate_size=37,
        )
    )
    with pytest.raises(ValueError, match="ViTForImageClassification or ViTModel, got DeiTForImageClassification"):
        IViTForImageClassification.from_vit(deit)
    BertModel(
        BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=37)
    ).save_pretrained(tmp_path / "bert")
    with pytest.raises(ValueError, match="model_type 'vit'\\), got model_type 'bert'"):
        IViTForImageClassification.from_vit(tmp_path / "bert")


def test_mismatched_overrides_are_refused():
    with pytest.raises(
        ValueError, match="hidden_size.* change the architecture .*Mismatched checkpoint: .* differ in shape"
    ):
        IViTForImageClassification.from_vit(tiny_vit(), hidden_size=64)
    with pytest.raises(ValueError, match="out of range"):
        IViTForImageClassification.from_vit(tiny_vit(), interaction_layers=[2])
