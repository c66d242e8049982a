"""Every I-model checks its inputs where they enter (the forward), the same way for every student: NaN or infinite
pixels (which the parents pass on to NaN logits without a word), raw integer pixels, the wrong channel count or image
size, keyword arguments the parent does not take, labels that cannot be class ids; `attention_mask` means what it
means for the parent. And every student converts from a source configuration that carries an attribute transformers
accepts but the I-model's configuration does not know."""

import logging

import pytest
import torch
from conftest import tiny_detr_kwargs, tiny_ivit_config, tiny_segmentation_kwargs
from torch.utils.flop_counter import FlopCounterMode
from transformers import (
    ConditionalDetrConfig,
    ConditionalDetrForObjectDetection,
    DetrConfig,
    DetrForObjectDetection,
    DetrForSegmentation,
    Dinov2Config,
    Dinov2ForImageClassification,
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersForImageClassification,
    SiglipConfig,
    SiglipForImageClassification,
    ViTConfig,
    ViTForImageClassification,
)

from hf_lfi import (
    IConditionalDetrForObjectDetection,
    IDetrForObjectDetection,
    IDetrForSegmentation,
    IDinov2ForImageClassification,
    ISiglipForImageClassification,
    IViTForImageClassification,
    flop_report,
)

SHAPE = dict(image_size=28, patch_size=7, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_labels=3)


def vit_source(**extra):
    return ViTForImageClassification(ViTConfig(**SHAPE, intermediate_size=37, **extra)).eval()


def dinov2_source(**extra):
    return Dinov2ForImageClassification(Dinov2Config(**SHAPE, **extra)).eval()


def dinov2_registers_source(**extra):
    config = Dinov2WithRegistersConfig(**SHAPE, num_register_tokens=2, **extra)
    return Dinov2WithRegistersForImageClassification(config).eval()


def siglip_source(**extra):
    vision = {key: value for key, value in SHAPE.items() if key != "num_labels"}
    config = SiglipConfig(vision_config={**vision, "intermediate_size": 37, **extra}, num_labels=3)
    return SiglipForImageClassification(config).eval()


def detr_source(**extra):
    return DetrForObjectDetection(DetrConfig(**tiny_detr_kwargs(), **extra)).eval()


def conditional_detr_source(**extra):
    return ConditionalDetrForObjectDetection(ConditionalDetrConfig(**tiny_detr_kwargs(), **extra)).eval()


def detr_segmentation_source(**extra):
    return DetrForSegmentation(DetrConfig(**tiny_segmentation_kwargs(), **extra)).eval()


STUDENTS = {  # name -> (source maker, conversion, pixel size)
    "ivit": (vit_source, IViTForImageClassification.from_vit, 28),
    "idinov2": (dinov2_source, IDinov2ForImageClassification.from_dinov2, 28),
    "idinov2-registers": (dinov2_registers_source, IDinov2ForImageClassification.from_dinov2, 28),
    "isiglip": (siglip_source, ISiglipForImageClassification.from_siglip, 28),
    "idetr": (detr_source, IDetrForObjectDetection.from_detr, 32),
    "iconditional-detr": (conditional_detr_source, IConditionalDetrForObjectDetection.from_conditional_detr, 32),
    "idetr-segmentation": (detr_segmentation_source, IDetrForSegmentation.from_detr, 32),
}
CLASSIFIERS = ["ivit", "idinov2", "idinov2-registers", "isiglip"]


def student(name):
    make, convert, size = STUDENTS[name]
    source = make()
    return source, convert(source).eval(), size


@pytest.mark.parametrize("name", STUDENTS)
def test_non_finite_pixels_are_refused_where_the_parent_gives_nan(name):
    source, model, size = student(name)
    pixels = torch.randn(3, 3, size, size)
    pixels[1, 0, 2, 3] = float("nan")
    pixels[2, 1, 0, 0] = float("inf")
    with torch.no_grad():
        parent_logits = source(pixels).logits
        assert parent_logits[0].isfinite().all() and not parent_logits[1:].isfinite().any()  # NaN, without a word
        with pytest.raises(ValueError, match="pixel_values have NaN or infinite values \\(images \\[1, 2\\]"):
            model(pixels)


@pytest.mark.parametrize("name", STUDENTS)
def test_bad_pixel_values_are_clear_errors(name):
    _, model, size = student(name)
    with pytest.raises(ValueError, match="pixel_values are torch.uint8: the model reads normalised float images"):
        model(torch.randint(0, 255, (1, 3, size, size), dtype=torch.uint8))
    with pytest.raises(ValueError, match="pixel_values have 1 channel\\(s\\); the model takes config.num_channels=3"):
        model(torch.randn(1, 1, size, size))
    with pytest.raises(ValueError, match="pixel_values must be a torch.Tensor, got ndarray"):
        model(torch.randn(1, 3, size, size).numpy())
    with pytest.raises(ValueError, match=f"with at least one image, got shape \\(0, 3, {size}, {size}\\)"):
        model(torch.randn(0, 3, size, size))  # the parents fail deep in a reshape


@pytest.mark.parametrize("name", ["ivit", "isiglip"])
def test_image_size_must_match_unless_position_embeddings_interpolate(name):
    source, model, size = student(name)
    larger = torch.randn(1, 3, size + 7, size + 7)
    with pytest.raises(ValueError, match=f"Image size 35x35 differs from the model's {size}x{size}"):
        model(larger)
    with torch.no_grad():  # what the parent does with interpolation, the I-model does too
        torch.testing.assert_close(
            model(larger, interpolate_pos_encoding=True).logits,
            source(larger, interpolate_pos_encoding=True).logits,
            atol=1e-5,
            rtol=1e-4,
        )


@pytest.mark.parametrize("name", STUDENTS)
def test_keyword_arguments_the_parent_does_not_take_are_refused(name):
    _, model, size = student(name)
    with pytest.raises(TypeError, match="unexpected keyword arguments \\['output_interaction'\\]"):
        model(torch.randn(1, 3, size, size), output_interaction=True)


@pytest.mark.parametrize("name", ["ivit", "idinov2", "idinov2-registers"])
def test_attention_mask_means_what_it_means_for_the_parent(name):
    """ViT and DINOv2 take a key-padding `attention_mask` over their tokens (prefix tokens included): the converted
    model gives the parent's logits with it, and its student map puts no mass on masked patches."""
    source, model, size = student(name)
    pixels = torch.randn(2, 3, size, size)
    prefix = model.config.num_register_tokens + 1 if name.startswith("idinov2") else 1
    tokens = prefix + (size // 7) ** 2
    mask = torch.ones(2, tokens, dtype=torch.long)
    mask[1, -5:] = 0
    with torch.no_grad():
        out = model(pixels, attention_mask=mask, output_interactions=True)
        expected = source(pixels, attention_mask=mask).logits
    torch.testing.assert_close(out.logits, expected, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(expected, source(pixels).logits, atol=1e-4)  # the mask does change the parent's logits
    for student_map in out.interaction_maps:
        assert student_map[1].flatten()[-5:].sum() == 0 and student_map[0].flatten()[-5:].sum() > 0


@pytest.mark.parametrize(
    "name,hint",
    [
        ("isiglip", "SiglipForImageClassification attends to every patch: it takes no attention_mask"),
        ("idetr", "DETR-family models mark padded pixels with pixel_mask"),
        ("iconditional-detr", "DETR-family models mark padded pixels with pixel_mask"),
        ("idetr-segmentation", "DETR-family models mark padded pixels with pixel_mask"),
    ],
)
def test_attention_mask_is_refused_where_the_parent_takes_none(name, hint):
    _, model, size = student(name)
    with pytest.raises(TypeError, match=f"unexpected keyword arguments \\['attention_mask'\\].*{hint}"):
        model(torch.randn(1, 3, size, size), attention_mask=torch.ones(1, size, size))


@pytest.mark.parametrize("name", CLASSIFIERS)
@pytest.mark.parametrize(
    "labels,message",
    [
        (torch.tensor([0, 1, 2]), "labels has shape \\(3,\\) for a batch of 2 images"),
        (torch.tensor([0.0, 1.0]), "labels are torch.float32 of shape \\(2,\\): class ids must be integers"),
        (torch.tensor([0, 3]), "labels must lie in \\[0, 3\\), got values from 0 to 3"),
    ],
)
def test_classification_labels_are_checked(name, labels, message):
    _, model, size = student(name)
    with pytest.raises(ValueError, match=message):
        model(torch.randn(2, 3, size, size), labels=labels)
    multi_label = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])  # float targets of (batch, num_labels) are fine
    assert model(torch.randn(2, 3, size, size), labels=multi_label).loss.isfinite()


@pytest.mark.parametrize("name", ["idetr", "iconditional-detr"])
@pytest.mark.parametrize(
    "labels,message",
    [
        (
            {"class_labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])},
            "labels must be a list with one target dict per image, got dict",
        ),
        (
            [{"class_labels": torch.tensor([0.0]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}],
            "Target 0: class_labels must be a 1-d tensor of integer class ids, got torch.float32",
        ),
        (
            [{"class_labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, float("nan"), 0.2, 0.2]])}],
            "Target 0 has NaN or infinite box coordinates",
        ),
    ],
)
def test_detection_labels_are_checked(name, labels, message):
    _, model, size = student(name)
    with pytest.raises(ValueError, match=message):
        model(torch.randn(1, 3, size, size), labels=labels)


@pytest.mark.parametrize("name", STUDENTS)
def test_source_config_with_an_extra_attribute_converts(name, tmp_path, caplog):
    """transformers keeps a stray configuration attribute (e.g. `intermediate_size` in a converted DINOv2
    checkpoint); the source loads, so it converts, with a warning naming what is left out, from the object and from
    its folder, and gives the source's outputs at step 0."""
    make, convert, size = STUDENTS[name]
    source = make(intermediate_size=37) if name.startswith("idinov2") else make(stray_setting=1)
    source.save_pretrained(tmp_path / "source")
    pixels = torch.randn(1, 3, size, size)
    for given in (source, tmp_path / "source"):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            model = convert(given).eval()
        assert "they are not carried over" in caplog.text
        assert "intermediate_size" in caplog.text or "stray_setting" in caplog.text
        with torch.no_grad():
            torch.testing.assert_close(model(pixels).logits, source(pixels).logits, atol=1e-5, rtol=1e-4)


def test_overrides_that_change_the_architecture_are_named():
    with pytest.raises(ValueError, match="the overrides \\{'hidden_size': '32 -> 64'\\} change the architecture"):
        IViTForImageClassification.from_vit(vit_source(), hidden_size=64)
    with pytest.raises(ValueError, match="\\{'num_hidden_layers': '2 -> 1'\\} change the architecture"):
        IViTForImageClassification.from_vit(vit_source(), num_hidden_layers=1)
    assert IViTForImageClassification(tiny_ivit_config()).config.num_hidden_layers == 2


def test_a_model_built_from_its_parents_config_is_refused():
    config = ViTConfig(**SHAPE, intermediate_size=37)
    with pytest.raises(ValueError, match="IViTModel needs an IViTConfig, got a ViTConfig: build one"):
        IViTForImageClassification(config)


def _counted_flops(model, pixel_values, **kwargs) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(pixel_values, **kwargs)
    return counter.get_total_flops()


@pytest.mark.parametrize("name", STUDENTS)
def test_flop_report_counts_on_meta_tensors_what_a_real_forward_counts(name):
    """`flop_report` (model cards, benchmarks) runs the models on the meta device, which the input checks let through:
    its counts equal those of a real forward of both models, at the configuration's size and at another one."""
    source, model, size = student(name)
    for model_ in (source, model):
        model_.set_attn_implementation("eager")
    classifier = name in CLASSIFIERS
    for image_size in (None, size + 7) if classifier else (size, size + 16):
        pixels = torch.randn(1, 3, image_size or size, image_size or size)
        kwargs = {"interpolate_pos_encoding": True} if image_size and name in ("ivit", "isiglip") else {}
        report = flop_report(model.config, image_size=image_size, model_class=type(model))
        assert report["ivit_flops"] == _counted_flops(model, pixels, **kwargs)
        assert report["vit_flops"] == _counted_flops(source, pixels, **kwargs)
        assert report["ratio"] > 1
