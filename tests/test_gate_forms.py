"""Gate forms (per element, per row, scalar, none) and the fused path (issue 11): equal to the float64 reference and
to the general path, forward and gradients, with and without `interpolate_pos_encoding` and DETR padding."""

import pytest
import torch
from conftest import randomize_gates, run_attention, tiny_detr, tiny_detr_kwargs, tiny_ivit_config, tiny_vit
from huggingface_hub.errors import StrictDataclassFieldValidationError
from reference import reference_detr_interaction_attention, reference_interaction_attention, reference_student_map

from hf_lfi import IDetrConfig, IDetrForObjectDetection, IViTForImageClassification, IViTModel
from hf_lfi.modeling import interaction_attention
from hf_lfi.modeling.interaction_attention import GatedControlNetwork, QueryGate
from hf_lfi.modeling.modeling_idetr import IDetrSelfAttention
from hf_lfi.modeling.modeling_ivit import IViTAttention

FUSED_FORMS = [("row", "head"), ("row", "layer"), ("scalar", "head"), ("scalar", "layer"), ("element", "none")]


def _diverge(model):
    randomize_gates(model)
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "interaction_q_proj"):
                module.interaction_q_proj.weight.normal_(std=0.3)


@pytest.mark.parametrize("form,granularity", FUSED_FORMS)
@pytest.mark.parametrize("reduction", ["cls", "mean"])
def test_fused_attention_matches_reference(form, granularity, reduction):
    config = tiny_ivit_config(gate_form=form, gate_granularity=granularity, interaction_map_reduction=reduction)
    attention = IViTAttention(config).eval()
    _diverge(attention)
    x = torch.randn(3, 17, config.hidden_size)
    out, fused, student, gates = run_attention(attention, x, output_interactions=True)  # no C_F asked: the fused path
    assert fused is None
    ref_out, _, ref_agt, g1, g2 = reference_interaction_attention(attention, x)
    torch.testing.assert_close(out.double(), ref_out, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(student.double(), reference_student_map(ref_agt, reduction), atol=1e-6, rtol=1e-4)
    expected_gates = torch.stack([g1.mean(dim=(2, 3)), g2.mean(dim=(2, 3))], dim=-1)
    torch.testing.assert_close(gates.double(), expected_gates, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
@pytest.mark.parametrize("form,granularity", FUSED_FORMS)
@pytest.mark.parametrize("image_size,interpolate", [((30, 30), False), ((22, 26), True)])
def test_fused_path_equals_general_path_with_gradients(dtype, atol, form, granularity, image_size, interpolate):
    config = tiny_ivit_config(gate_form=form, gate_granularity=granularity, interaction_map_reduction="mean")
    model = IViTForImageClassification(config).to(dtype)
    _diverge(model)
    pixel_values = torch.randn(2, 3, *image_size, dtype=dtype)

    def run(output_attentions: bool):
        model.zero_grad()
        out = model(
            pixel_values,
            interpolate_pos_encoding=interpolate,
            output_interactions=True,
            output_attentions=output_attentions,
        )
        (
            out.logits.square().sum()
            + sum((m * torch.arange(m.numel(), dtype=dtype).view_as(m)).sum() for m in out.interaction_maps)
        ).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return out, grads

    fused_out, fused_grads = run(False)  # the fused path
    general_out, general_grads = run(True)  # C_F asked for: the general path
    assert general_out.attentions[0] is not None
    torch.testing.assert_close(fused_out.logits, general_out.logits, atol=atol, rtol=atol)
    for a, b in zip(fused_out.interaction_maps, general_out.interaction_maps):
        torch.testing.assert_close(a, b, atol=atol, rtol=atol)
    assert fused_grads.keys() == general_grads.keys()
    for name in fused_grads:
        torch.testing.assert_close(fused_grads[name], general_grads[name], atol=atol * 10, rtol=atol * 10, msg=name)
    gate_grads = [g for n, g in fused_grads.items() if ".gate." in n]
    assert granularity == "none" or (gate_grads and all(g.abs().sum() > 0 for g in gate_grads))


@pytest.mark.parametrize("form", ["row", "scalar"])
def test_detr_fused_attention_matches_reference_with_padding(form):
    config = IDetrConfig(**tiny_detr_kwargs(gate_form=form))
    attention = IDetrSelfAttention(config).eval()
    _diverge(attention)
    hidden, position = torch.randn(3, 12, 32), torch.randn(3, 12, 32)
    key_mask = torch.ones(3, 12, dtype=torch.bool)
    key_mask[1, 8:] = False
    key_mask[2, 5:] = False
    bool_mask = key_mask[:, None, None, :].expand(3, 1, 12, 12)
    out, fused, student, _ = run_attention(attention, hidden, bool_mask, position, output_interactions=True)
    assert fused is None
    expected_out, expected_student = reference_detr_interaction_attention(attention, hidden, position, key_mask)
    real = key_mask[..., None].expand_as(out)
    torch.testing.assert_close(out[real].double(), expected_out[real], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(student.double(), expected_student, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("form,granularity", [("element", "head"), *FUSED_FORMS])
def test_converted_models_reproduce_their_source_at_step_zero(form, granularity):
    vit = tiny_vit()
    model = IViTForImageClassification.from_vit(vit, gate_form=form, gate_granularity=granularity).eval()
    pixel_values = torch.randn(3, 3, 30, 30)
    with torch.no_grad():
        torch.testing.assert_close(model(pixel_values).logits, vit(pixel_values).logits, atol=1e-4, rtol=0)
        gates = model(pixel_values, output_interactions=True).gates
    if granularity != "none":
        for g in gates:
            torch.testing.assert_close(g.sum(-1), torch.ones_like(g[..., 0]))
    detr = tiny_detr()
    idetr = IDetrForObjectDetection.from_detr(detr, gate_form=form, gate_granularity=granularity).eval()
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        torch.testing.assert_close(idetr(x).logits, detr(x).logits, atol=1e-5, rtol=1e-5)


def test_scaled_gate_input_reads_order_one_values():
    """N * C: the gate's logit moves by w per unit of N * C, so a weight step changes the gate equally at any N."""
    for num_keys in (17, 197, 1370):
        gate = GatedControlNetwork(1, init_bias=2.0, input_scale="num_keys")
        with torch.no_grad():
            gate.weight.zero_()
            gate.weight[0, 0, 0] = 1.0  # g1 logit += N * C_AGT
        uniform = torch.full((1, 1, 1, num_keys), 1.0 / num_keys)
        fused, means = gate(uniform, uniform, return_gate_means=True)
        torch.testing.assert_close(means[0, 0, 0], torch.sigmoid(torch.tensor(-2.0 + 1.0)))
        raw = GatedControlNetwork(1, init_bias=2.0, input_scale="none")
        raw.load_state_dict(gate.state_dict())
        _, raw_means = raw(uniform, uniform, return_gate_means=True)
        assert abs(raw_means[0, 0, 0] - torch.sigmoid(torch.tensor(-2.0))) < 1.0 / num_keys


def test_row_gate_depends_on_the_token():
    gate = QueryGate(2, 8)
    randomize_gates(gate)
    g1, g2 = gate(torch.randn(3, 5, 8))
    assert g1.shape == g2.shape == (3, 2, 5, 1)
    assert g1.std() > 0.05  # differs by image and position


def test_fused_path_keeps_no_square_map(monkeypatch):
    """The fused path never calls the general block (which builds [batch, heads, 2N, N] scores)."""
    monkeypatch.setattr(interaction_attention, "_interaction_attention_block", None)
    model = IViTModel(tiny_ivit_config(gate_form="row")).eval()
    model(torch.randn(2, 3, 30, 30), output_interactions=True)
    with pytest.raises(TypeError):
        model(torch.randn(2, 3, 30, 30), output_attentions=True)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (dict(gate_form="cell"), "gate_form.*expected one of"),
        (dict(gate_input_scale="log"), "gate_input_scale.*expected one of"),
        (dict(gate_form="row", gate_hidden_size=4), "gate_hidden_size=4 applies to the per-element gate only"),
    ],
)
def test_bad_gate_options_are_clear_errors(overrides, message):
    with pytest.raises((ValueError, StrictDataclassFieldValidationError), match=message):
        tiny_ivit_config(**overrides)
