"""I-Conditional-DETR (paper Table 7): Conditional-DETR with interaction queries in the encoder self-attention (the
attention against the float64 reference: test_modeling_idetr.py)."""

import pytest
import torch
from conftest import randomize_gates, remote_code_outputs, tiny_detr_kwargs
from test_modeling_idetr import padded_batch
from transformers import (
    AutoModelForObjectDetection,
    ConditionalDetrConfig,
    ConditionalDetrForObjectDetection,
    DetrConfig,
    DetrForObjectDetection,
)

from hf_lfi import IConditionalDetrConfig, IConditionalDetrForObjectDetection


def tiny_conditional_detr(**overrides) -> ConditionalDetrForObjectDetection:
    return ConditionalDetrForObjectDetection(ConditionalDetrConfig(**tiny_detr_kwargs(**overrides))).eval()


def targets():
    return [
        {"class_labels": torch.tensor([0, 2]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.3, 0.3, 0.1, 0.2]])},
        {"class_labels": torch.tensor([1]), "boxes": torch.tensor([[0.3, 0.6, 0.2, 0.3]])},
    ]


def test_converted_model_reproduces_conditional_detr_at_step_zero():
    source = tiny_conditional_detr()
    model = IConditionalDetrForObjectDetection.from_conditional_detr(source).eval()
    pixel_values, pixel_mask = padded_batch()
    with torch.no_grad():
        expected = source(pixel_values, pixel_mask=pixel_mask, labels=targets())
        out = model(pixel_values, pixel_mask=pixel_mask, labels=targets(), output_interactions=True)
    for key in ("logits", "pred_boxes", "loss"):
        torch.testing.assert_close(out[key], expected[key], atol=1e-6, rtol=1e-5)
    assert out.logits.shape == (2, 10, 3)  # focal loss: no "no object" class
    assert set(out.loss_dict) == set(expected.loss_dict) == {"loss_ce", "loss_bbox", "loss_giou", "cardinality_error"}
    assert len(out.interaction_maps) == 2 and out.interaction_mask.shape == (2, 8, 6)
    for student in out.interaction_maps:
        torch.testing.assert_close(student.sum(dim=(1, 2)), torch.ones(2))
        assert student[1, :, 4:].abs().sum() == 0


def test_only_new_parameters_and_heads_change():
    model = IConditionalDetrForObjectDetection.from_conditional_detr(tiny_conditional_detr()).train()
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    heads = ("class_labels_classifier.", "bbox_predictor.")
    assert trainable and all("interaction_q_proj" in n or ".gate." in n or n.startswith(heads) for n in trainable)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    pixel_values, pixel_mask = padded_batch()
    out = model(pixel_values, pixel_mask=pixel_mask, labels=targets(), output_interactions=True)
    (out.loss + sum(m.max() for m in out.interaction_maps)).backward()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1).step()
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed and changed <= trainable
    assert any("interaction_q_proj" in n for n in changed) and any(".gate." in n for n in changed)


def test_from_scratch_freezes_what_conditional_detr_freezes_and_bad_input_is_clear():
    model = IConditionalDetrForObjectDetection(IConditionalDetrConfig(**tiny_detr_kwargs()))
    frozen_by_detr = {n for n, p in tiny_conditional_detr().named_parameters() if not p.requires_grad}
    assert {n for n, p in model.named_parameters() if not p.requires_grad} == frozen_by_detr  # ResNet stem, as DETR's
    pixel_values, pixel_mask = padded_batch()
    bad = targets()
    bad[1]["class_labels"] = torch.tensor([3])
    with pytest.raises(ValueError, match="category ids \\[3\\] outside \\[0, 3\\)"):
        model(pixel_values, pixel_mask=pixel_mask, labels=bad)
    with pytest.raises(ValueError, match="pixel_mask must be"):
        model(pixel_values, pixel_mask=pixel_mask[:, :32])
    with pytest.raises(ValueError, match="expects a ConditionalDetrForObjectDetection or ConditionalDetrModel"):
        IConditionalDetrForObjectDetection.from_conditional_detr(
            DetrForObjectDetection(DetrConfig(**tiny_detr_kwargs()))
        )


def test_save_load_auto_and_remote_code(tmp_path):
    model = IConditionalDetrForObjectDetection.from_conditional_detr(tiny_conditional_detr(), interaction_layers=[1])
    model.eval()
    randomize_gates(model)
    model.save_pretrained(tmp_path / "ckpt")
    pixel_values, pixel_mask = padded_batch()
    torch.save((pixel_values, pixel_mask), tmp_path / "x.pt")
    with torch.no_grad():
        expected = model(pixel_values, pixel_mask=pixel_mask)
    loaded = AutoModelForObjectDetection.from_pretrained(tmp_path / "ckpt").eval()
    assert isinstance(loaded, IConditionalDetrForObjectDetection) and loaded.config.interaction_layer_indices == [1]
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values, pixel_mask=pixel_mask).logits, expected.logits)
    module = remote_code_outputs(
        tmp_path / "ckpt",
        "AutoModelForObjectDetection",
        tmp_path / "x.pt",
        tmp_path / "remote.pt",
        ("logits", "pred_boxes"),
    )
    assert not module.startswith("hf_lfi")
    remote = torch.load(tmp_path / "remote.pt")
    torch.testing.assert_close(remote["logits"], expected.logits)
    torch.testing.assert_close(remote["pred_boxes"], expected.pred_boxes)


def test_parameter_overhead_below_one_percent_at_r50_size():
    from transformers import ResNetConfig

    r50 = dict(
        use_timm_backbone=False,
        use_pretrained_backbone=False,
        backbone_config=ResNetConfig(out_features=["stage4"]),
        num_labels=91,
    )
    with torch.device("meta"):
        source = sum(p.numel() for p in ConditionalDetrForObjectDetection(ConditionalDetrConfig(**r50)).parameters())
        model = sum(p.numel() for p in IConditionalDetrForObjectDetection(IConditionalDetrConfig(**r50)).parameters())
    assert 43e6 < source < 44e6  # Conditional-DETR-R50: 43.5M
    assert (model - source) == 6 * (256 * 256 + 256 + 8 * 6)
    assert (model - source) / source < 0.01
