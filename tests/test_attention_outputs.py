"""C_VFM and C_AGT as model outputs (`original_attentions`, `interaction_attentions`, with `output_interactions` and
`output_attentions`), next to C_F in the parent's attentions, for every student."""

import pytest
import torch
from conftest import randomize_gates, tiny_detr_kwargs, tiny_ivit_config
from reference import reference_interaction_attention
from test_students import SHAPE

import hf_lfi
from hf_lfi import student_map_from_attention
from hf_lfi.modeling import interaction_attention
from hf_lfi.modeling.interaction_attention import InteractionAttentionMixin
from hf_lfi.modeling.modeling_ivit import IViTAttention


def tiny_student(name: str, **overrides):
    if name == "ivit":
        model = hf_lfi.IViTForImageClassification(tiny_ivit_config(**overrides))
    elif name == "idinov2":
        model = hf_lfi.IDinov2ForImageClassification(
            hf_lfi.IDinov2Config(**SHAPE, num_register_tokens=2, num_labels=3, **overrides)
        )
    elif name == "isiglip":
        model = hf_lfi.ISiglipForImageClassification(
            hf_lfi.ISiglipConfig(**SHAPE, intermediate_size=37, num_labels=3, **overrides)
        )
    else:
        model = hf_lfi.IDetrForObjectDetection(hf_lfi.IDetrConfig(**tiny_detr_kwargs(**overrides)))
    with torch.no_grad():  # C_AGT different from C_VFM, gates away from their step-0 values
        for module in model.modules():
            if isinstance(module, InteractionAttentionMixin):
                module.interaction_q_proj.weight.normal_(std=0.3)
    randomize_gates(model)
    model.set_attn_implementation("eager")
    return model.eval()


def inputs(name: str) -> dict:
    if name == "idetr":  # a padded batch: the 2nd image is 40 px wide
        mask = torch.ones(2, 48, 64, dtype=torch.long)
        mask[1, :, 40:] = 0
        return {"pixel_values": torch.randn(2, 3, 48, 64), "pixel_mask": mask}
    size = 30 if name == "ivit" else SHAPE["image_size"]
    return {"pixel_values": torch.randn(2, 3, size, size)}


def test_attention_publishes_both_maps_of_the_reference():
    config = tiny_ivit_config()
    attention = IViTAttention(config).eval()
    with torch.no_grad():
        attention.interaction_q_proj.weight.normal_(std=0.3)
    randomize_gates(attention)
    x = torch.randn(2, 17, config.hidden_size)
    published = []
    handle = attention.attention_maps.register_forward_hook(lambda _m, _a, output: published.append(output))
    with torch.no_grad():
        _, fused = attention(x, output_attentions=True)
        attention(x)  # without attentions nothing is published
    handle.remove()
    assert len(published) == 1
    vfm, agt = published[0]
    _, ref_fused, ref_agt, g1, g2 = reference_interaction_attention(attention, x)
    torch.testing.assert_close(agt.double(), ref_agt, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(vfm.double(), (ref_fused - g1 * ref_agt) / g2, atol=1e-5, rtol=1e-4)  # Eq. 6
    torch.testing.assert_close(fused.double(), ref_fused, atol=1e-6, rtol=1e-4)
    assert not torch.allclose(vfm, agt, atol=1e-3)


@pytest.mark.parametrize("name", ["ivit", "idinov2", "isiglip", "idetr"])
def test_models_return_both_maps_reducing_to_their_student_maps(name):
    model = tiny_student(name)
    batch = inputs(name)
    with torch.no_grad():
        out = model(**batch, output_interactions=True, output_attentions=True)
        plain = model(**batch, output_interactions=True)
    layers = len(model.config.interaction_layer_indices)
    assert len(out.original_attentions) == len(out.interaction_attentions) == layers
    assert plain.original_attentions is None and plain.interaction_attentions is None
    attention = next(m for m in model.modules() if isinstance(m, InteractionAttentionMixin))
    key_mask = out.interaction_mask.flatten(1) if name == "idetr" else None
    for vfm, agt, student in zip(out.original_attentions, out.interaction_attentions, out.interaction_maps):
        assert vfm.shape == agt.shape and vfm.shape[:2] == (2, attention.config.num_attention_heads)
        torch.testing.assert_close(vfm.sum(-1), torch.ones(vfm.shape[:-1]))
        reduced = student_map_from_attention(
            agt, attention.student_map_reduction, attention.num_prefix_tokens, key_mask
        )
        torch.testing.assert_close(reduced.view_as(student), student)
        assert not torch.allclose(vfm, agt, atol=1e-3)


@pytest.mark.parametrize("name", ["ivit", "idetr"])
def test_without_gate_the_attentions_are_the_mean_of_both_maps(name, monkeypatch):
    """`gate_granularity="none"`: C_F = (C_AGT + C_VFM) / 2, in the parent's attentions, for the interaction layers;
    the batch is processed one item at a time (CPU chunks) and the maps still come out in batch order."""
    monkeypatch.setattr(interaction_attention, "CPU_CHUNK_BYTES", 1)
    model = tiny_student(name, gate_granularity="none", interaction_layers=[1])
    with torch.no_grad():
        out = model(**inputs(name), output_interactions=True, output_attentions=True)
    fused = out.attentions[1] if name == "ivit" else out.encoder_attentions[1]
    (vfm,), (agt,) = out.original_attentions, out.interaction_attentions
    torch.testing.assert_close(fused, (vfm + agt) / 2)
