import pytest
import torch
from conftest import randomize_gates, remote_code_outputs, run_attention, tiny_detr, tiny_detr_kwargs
from reference import reference_detr_interaction_attention
from transformers import AutoModelForObjectDetection, DetrConfig, DetrModel

import hf_lfi
from hf_lfi import IConditionalDetrConfig, IDetrConfig, IDetrForObjectDetection
from hf_lfi.modeling.modeling_iconditional_detr import IConditionalDetrSelfAttention
from hf_lfi.modeling.modeling_idetr import IDetrSelfAttention


def padded_batch():
    """Two images, the second padded on its right third (as DetrImageProcessor pads to the batch's largest size)."""
    pixel_values = torch.randn(2, 3, 64, 48)
    pixel_mask = torch.ones(2, 64, 48, dtype=torch.long)
    pixel_mask[1, :, 32:] = 0
    return pixel_values, pixel_mask


def targets():
    return [
        {"class_labels": torch.tensor([0, 2]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.3, 0.3, 0.1, 0.2]])},
        {"class_labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)},  # an image with no objects
    ]


@pytest.mark.parametrize("granularity", ["head", "layer"])
@pytest.mark.parametrize(
    "attention_class, config_class, boolean_mask",
    [(IDetrSelfAttention, IDetrConfig, True), (IConditionalDetrSelfAttention, IConditionalDetrConfig, False)],
)
def test_attention_matches_reference_with_position_embeddings_and_padding(
    granularity, attention_class, config_class, boolean_mask
):
    """DETR's and Conditional-DETR's encoder self-attention (content + position into P_q, P'_q and P_k), with a boolean
    keep-mask or an additive mask, against the float64 reference."""
    attention = attention_class(config_class(**tiny_detr_kwargs(gate_granularity=granularity))).eval()
    randomize_gates(attention)
    hidden, position = torch.randn(3, 12, 32), torch.randn(3, 12, 32)
    key_mask = torch.ones(3, 12, dtype=torch.bool)
    key_mask[1, 8:] = False
    key_mask[2, 5:] = False
    mask = key_mask[:, None, None, :].expand(3, 1, 12, 12)
    if not boolean_mask:
        mask = torch.zeros(3, 1, 12, 12).masked_fill(~mask, torch.finfo(torch.float32).min)
    out, _, student, gates = run_attention(attention, hidden, mask, position, output_interactions=True)
    expected_out, expected_student = reference_detr_interaction_attention(attention, hidden, position, key_mask)
    real = key_mask[..., None].expand_as(out)  # padded query rows are DETR's business, not compared
    torch.testing.assert_close(out[real].double(), expected_out[real], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(student.double(), expected_student, atol=1e-6, rtol=1e-5)
    assert gates.shape == (3, 4, 2)


def test_converted_model_reproduces_detr_at_step_zero():
    detr = tiny_detr()
    model = IDetrForObjectDetection.from_detr(detr).eval()
    pixel_values, pixel_mask = padded_batch()
    with torch.no_grad():
        expected = detr(pixel_values, pixel_mask=pixel_mask)
        out = model(pixel_values, pixel_mask=pixel_mask, output_interactions=True)
    torch.testing.assert_close(out.logits, expected.logits, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.pred_boxes, expected.pred_boxes, atol=1e-6, rtol=1e-5)
    assert len(out.interaction_maps) == 2 and out.interaction_maps[0].shape == (2, 8, 6)
    assert out.interaction_mask.shape == (2, 8, 6) and out.interaction_mask[1, :, 4:].sum() == 0
    for student in out.interaction_maps:
        torch.testing.assert_close(student.sum(dim=(1, 2)), torch.ones(2))
        assert student[1, :, 4:].abs().sum() == 0  # no mass on padding


def test_only_new_parameters_change_and_loss_dict_is_detrs():
    model = IDetrForObjectDetection.from_detr(tiny_detr()).train()
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(
        "interaction_q_proj" in n or ".gate." in n or n.startswith(("class_labels_classifier.", "bbox_predictor."))
        for n in trainable
    )
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    pixel_values, pixel_mask = padded_batch()
    out = model(pixel_values, pixel_mask=pixel_mask, labels=targets(), output_interactions=True)
    assert set(out.loss_dict) == {"loss_ce", "loss_bbox", "loss_giou", "cardinality_error"}
    (out.loss + sum(m.max() for m in out.interaction_maps)).backward()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1).step()
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed and changed <= trainable
    assert any("interaction_q_proj" in n for n in changed) and any(".gate." in n for n in changed)


def test_save_load_auto_and_remote_code(tmp_path):
    model = IDetrForObjectDetection.from_detr(tiny_detr(), interaction_layers=[1]).eval()
    randomize_gates(model)
    model.save_pretrained(tmp_path / "ckpt")
    pixel_values, pixel_mask = padded_batch()
    torch.save((pixel_values, pixel_mask), tmp_path / "x.pt")
    with torch.no_grad():
        expected = model(pixel_values, pixel_mask=pixel_mask).logits
    loaded = AutoModelForObjectDetection.from_pretrained(tmp_path / "ckpt").eval()
    assert isinstance(loaded, IDetrForObjectDetection) and loaded.config.interaction_layer_indices == [1]
    assert all(
        p.requires_grad == ("interaction" in n or ".gate." in n or n.startswith(("class_labels", "bbox")))
        for n, p in loaded.named_parameters()
    )
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values, pixel_mask=pixel_mask).logits, expected)
    module = remote_code_outputs(
        tmp_path / "ckpt", "AutoModelForObjectDetection", tmp_path / "x.pt", tmp_path / "remote.pt", ("logits",)
    )
    assert not module.startswith("hf_lfi")
    torch.testing.assert_close(torch.load(tmp_path / "remote.pt")["logits"], expected)


def test_conversion_from_headless_detr_and_new_labels():
    detr = tiny_detr()
    model = IDetrForObjectDetection.from_detr(detr, num_labels=5)
    assert model.class_labels_classifier.out_features == 6
    torch.testing.assert_close(model.model.input_projection.weight, detr.model.input_projection.weight)
    headless = IDetrForObjectDetection.from_detr(detr.model)
    torch.testing.assert_close(
        headless.model.encoder.layers[0].self_attn.interaction_q_proj.weight,
        detr.model.encoder.layers[0].self_attn.q_proj.weight,
    )
    with pytest.raises(ValueError, match="expects a DetrForObjectDetection or DetrModel"):
        IDetrForObjectDetection.from_detr(hf_lfi.IViTForImageClassification(hf_lfi.IViTConfig(num_hidden_layers=1)))
    with pytest.raises(ValueError, match="Mismatched checkpoint"):
        IDetrForObjectDetection.from_detr(detr, d_model=64)


def test_bad_detection_input_is_a_clear_error(tmp_path):
    model = IDetrForObjectDetection(IDetrConfig(**tiny_detr_kwargs()))
    pixel_values, pixel_mask = padded_batch()
    bad = targets()
    bad[0]["boxes"] = torch.tensor([[0.5, 0.5, 0.2, 0.2], [1.3, 0.3, 0.1, 0.2]])
    with pytest.raises(ValueError, match="boxes outside the image"):
        model(pixel_values, pixel_mask=pixel_mask, labels=bad)
    bad = targets()
    bad[0]["class_labels"] = torch.tensor([0, 7])
    with pytest.raises(ValueError, match="category ids \\[0, 7\\] outside \\[0, 3\\)"):
        model(pixel_values, pixel_mask=pixel_mask, labels=bad)
    with pytest.raises(ValueError, match="1 target dicts for a batch of 2"):
        model(pixel_values, pixel_mask=pixel_mask, labels=targets()[:1])
    with pytest.raises(ValueError, match="pixel_mask must be"):
        model(pixel_values, pixel_mask=pixel_mask[:, :32])
    DetrModel(DetrConfig(**tiny_detr_kwargs())).save_pretrained(tmp_path / "plain")
    with pytest.raises(ValueError, match="not an I-DETR checkpoint"):
        hf_lfi.IDetrModel.from_pretrained(tmp_path / "plain")


def test_parameter_overhead_below_one_percent_at_detr_r50_size():
    from transformers import ResNetConfig

    r50 = dict(
        use_timm_backbone=False,
        use_pretrained_backbone=False,
        backbone_config=ResNetConfig(out_features=["stage4"]),
        num_labels=91,
    )
    with torch.device("meta"):
        detr = sum(
            p.numel() for p in __import__("transformers").DetrForObjectDetection(DetrConfig(**r50)).parameters()
        )
        idetr = sum(p.numel() for p in IDetrForObjectDetection(IDetrConfig(**r50)).parameters())
    assert 41e6 < detr < 42e6  # DETR-R50
    assert (idetr - detr) == 6 * (256 * 256 + 256 + 8 * 6)  # one d x d projection + 8 linear gates per encoder layer
    assert (idetr - detr) / detr < 0.01
