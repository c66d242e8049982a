"""I-DETR segmentation (paper Table 6): DETR's segmentation model with interaction queries in the encoder."""

import pytest
import torch
from conftest import randomize_gates, remote_code_outputs, tiny_segmentation_kwargs
from transformers import AutoModelForImageSegmentation, DetrConfig, DetrForObjectDetection, DetrForSegmentation

from hf_lfi import IDetrConfig, IDetrForSegmentation


def tiny_detr_segmentation(**overrides) -> DetrForSegmentation:
    return DetrForSegmentation(DetrConfig(**tiny_segmentation_kwargs(**overrides))).eval()


def padded_batch():
    """Two images, the second 16 px wide, padded on its right (as DetrImageProcessor pads to the batch's largest size):
    its padding covers the last column of the 2 x 2 feature grid."""
    pixel_values = torch.randn(2, 3, 64, 48)
    pixel_mask = torch.ones(2, 64, 48, dtype=torch.long)
    pixel_mask[1, :, 16:] = 0
    return pixel_values, pixel_mask


def targets():
    """Targets with one mask per box at each image's real size (the second image is 64 x 16 before padding)."""
    first = torch.zeros(2, 64, 48)
    first[0, 20:40, 10:30], first[1, 5:15, 30:40] = 1, 1
    second = torch.zeros(1, 64, 16)
    second[0, 30:60, 4:12] = 1
    return [
        {
            "class_labels": torch.tensor([0, 2]),
            "boxes": torch.tensor([[0.42, 0.47, 0.42, 0.31], [0.73, 0.16, 0.21, 0.16]]),
            "masks": first,
        },
        {"class_labels": torch.tensor([1]), "boxes": torch.tensor([[0.38, 0.7, 0.5, 0.47]]), "masks": second},
    ]


def test_converted_model_reproduces_detr_segmentation_at_step_zero():
    detr = tiny_detr_segmentation()
    model = IDetrForSegmentation.from_detr(detr).eval()
    pixel_values, pixel_mask = padded_batch()
    with torch.no_grad():
        expected = detr(pixel_values, pixel_mask=pixel_mask, labels=targets())
        out = model(pixel_values, pixel_mask=pixel_mask, labels=targets(), output_interactions=True)
    for key in ("logits", "pred_boxes", "pred_masks", "loss"):
        torch.testing.assert_close(out[key], expected[key], atol=1e-5, rtol=1e-4)
    assert out.pred_masks.shape == (2, 10, 16, 12)  # the first FPN level: stride 4
    assert (
        set(out.loss_dict)
        == set(expected.loss_dict)
        == {
            "loss_ce",
            "loss_bbox",
            "loss_giou",
            "loss_mask",
            "loss_dice",
            "cardinality_error",
        }
    )
    grid = (2, 2)  # stage4 of a 64 x 48 image: stride 32 (rounded up)
    assert len(out.interaction_maps) == 2 and out.interaction_maps[0].shape == (2, *grid)
    assert out.interaction_mask.shape == (2, *grid) and out.interaction_mask[1, :, 1:].sum() == 0
    for student in out.interaction_maps:
        torch.testing.assert_close(student.sum(dim=(1, 2)), torch.ones(2))
        assert student[1, :, 1:].abs().sum() == 0  # no mass on padding


def test_only_new_parameters_detection_and_mask_heads_train():
    model = IDetrForSegmentation.from_detr(tiny_detr_segmentation()).train()
    heads = ("detr.class_labels_classifier.", "detr.bbox_predictor.", "bbox_attention.", "mask_head.")
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert {n for n in trainable if n.startswith("mask_head.")} == {
        n for n, _ in model.named_parameters() if n.startswith("mask_head.")
    }
    assert all("interaction_q_proj" in n or ".gate." in n or n.startswith(heads) for n in trainable)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    pixel_values, pixel_mask = padded_batch()
    out = model(pixel_values, pixel_mask=pixel_mask, labels=targets(), output_interactions=True)
    (out.loss + sum(m.max() for m in out.interaction_maps)).backward()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1).step()
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed and changed <= trainable
    for part in ("interaction_q_proj", ".gate.", "mask_head.", "bbox_attention."):
        assert any(part in n for n in changed), part


def test_save_load_auto_and_remote_code(tmp_path):
    model = IDetrForSegmentation.from_detr(tiny_detr_segmentation(), interaction_layers=[0]).eval()
    randomize_gates(model)
    model.save_pretrained(tmp_path / "ckpt")
    pixel_values, pixel_mask = padded_batch()
    torch.save((pixel_values, pixel_mask), tmp_path / "x.pt")
    with torch.no_grad():
        expected = model(pixel_values, pixel_mask=pixel_mask)
    loaded = AutoModelForImageSegmentation.from_pretrained(tmp_path / "ckpt").eval()
    assert isinstance(loaded, IDetrForSegmentation) and loaded.config.interaction_layer_indices == [0]
    assert loaded.config.model_type == "idetr"
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values, pixel_mask=pixel_mask).pred_masks, expected.pred_masks)
    module = remote_code_outputs(
        tmp_path / "ckpt",
        "AutoModelForImageSegmentation",
        tmp_path / "x.pt",
        tmp_path / "remote.pt",
        ("logits", "pred_masks"),
    )
    assert not module.startswith("hf_lfi")
    remote = torch.load(tmp_path / "remote.pt")
    torch.testing.assert_close(remote["logits"], expected.logits)
    torch.testing.assert_close(remote["pred_masks"], expected.pred_masks)


def test_conversion_from_a_detector_keeps_its_heads_and_adds_a_mask_head(tmp_path):
    detector = DetrForObjectDetection(DetrConfig(**tiny_segmentation_kwargs())).eval()
    detector.save_pretrained(tmp_path / "detector")
    for source in (detector, tmp_path / "detector"):
        model = IDetrForSegmentation.from_detr(source)
        torch.testing.assert_close(model.detr.class_labels_classifier.weight, detector.class_labels_classifier.weight)
        torch.testing.assert_close(
            model.detr.bbox_predictor.layers[0].weight, detector.bbox_predictor.layers[0].weight
        )
        assert model.mask_head.output_conv.weight.requires_grad
    detr = tiny_detr_segmentation()
    detr.save_pretrained(tmp_path / "segmentation")
    model = IDetrForSegmentation.from_detr(tmp_path / "segmentation")
    torch.testing.assert_close(model.mask_head.output_conv.weight, detr.mask_head.output_conv.weight)
    relabelled = IDetrForSegmentation.from_detr(detr, num_labels=5)
    assert relabelled.detr.class_labels_classifier.out_features == 6


def test_bad_segmentation_targets_are_clear_errors():
    model = IDetrForSegmentation(IDetrConfig(**tiny_segmentation_kwargs()))
    pixel_values, pixel_mask = padded_batch()
    bad = targets()
    del bad[0]["masks"]
    with pytest.raises(ValueError, match="Target 0 lacks 'masks'"):
        model(pixel_values, pixel_mask=pixel_mask, labels=bad)
    bad = targets()
    bad[0]["masks"] = bad[0]["masks"][:1]
    with pytest.raises(ValueError, match="one mask per box"):
        model(pixel_values, pixel_mask=pixel_mask, labels=bad)
    bad = targets()
    bad[1]["masks"] = torch.ones(1, 64, 8)  # smaller than the second image's 16 real columns
    with pytest.raises(ValueError, match="masks of size 64x8 do not fit"):
        model(pixel_values, pixel_mask=pixel_mask, labels=bad)
    bad = targets()
    bad[0]["masks"] = torch.nn.functional.interpolate(bad[0]["masks"][None], size=(32, 24))[0]  # not resized with it
    bad[1]["masks"] = torch.nn.functional.interpolate(bad[1]["masks"][None], size=(32, 8))[0]
    with pytest.raises(ValueError, match="do not fit"):
        model(pixel_values, labels=bad)
    bad = targets()
    bad[0]["masks"][1] = 0
    with pytest.raises(ValueError, match="masks \\[1\\] are empty"):
        model(pixel_values, pixel_mask=pixel_mask, labels=bad)
    with pytest.raises(ValueError, match="needs pixel_values"):
        model(pixel_values, inputs_embeds=torch.randn(2, 4, 32))


def test_parameter_overhead_below_one_percent_at_detr_r50_size():
    from transformers import ResNetConfig

    r50 = dict(
        use_timm_backbone=False,
        use_pretrained_backbone=False,
        backbone_config=ResNetConfig(out_features=["stage1", "stage2", "stage3", "stage4"]),
        num_labels=250,
    )
    with torch.device("meta"):
        detr = sum(p.numel() for p in DetrForSegmentation(DetrConfig(**r50)).parameters())
        idetr = sum(p.numel() for p in IDetrForSegmentation(IDetrConfig(**r50)).parameters())
    assert 42e6 < detr < 44e6  # DETR-R50 panoptic (paper: 42.9M)
    assert (idetr - detr) == 6 * (256 * 256 + 256 + 8 * 6)
    assert (idetr - detr) / detr < 0.01
