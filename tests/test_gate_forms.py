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
ELEMENT_FORMS = [("element", "head", 0), ("element", "layer", 0), ("element", "head", 2), ("element", "layer", 2)]


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
@pytest.mark.parametrize("form,granularity,hidden", [*((f, g, 0) for f, g in FUSED_FORMS), *ELEMENT_FORMS])
@pytest.mark.parametrize("image_size,interpolate", [((12, 12), False), ((10, 14), True)])
def test_sdpa_equals_eager_with_gradients(dtype, atol, form, granularity, hidden, image_size, interpolate):
    """attn_implementation="sdpa" (fused SDPA for gates constant along rows, blockwise for the per-element gate) against
    "eager" (the maps materialised): logits, student maps, mean gates and the gradient of every parameter."""
    config = tiny_ivit_config(
        image_size=12,
        gate_form=form,
        gate_granularity=granularity,
        gate_hidden_size=hidden,
        interaction_map_reduction="mean",
    )
    model = IViTForImageClassification(config).to(dtype)
    _diverge(model)
    pixel_values = torch.randn(2, 3, *image_size, dtype=dtype)

    def run(implementation: str):
        model.set_attn_implementation(implementation)
        model.zero_grad()
        out = model(pixel_values, interpolate_pos_encoding=interpolate, output_interactions=True)
        (
            out.logits.square().sum()
            + sum((m * torch.arange(m.numel(), dtype=dtype).view_as(m)).sum() for m in out.interaction_maps)
        ).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return out, grads

    sdpa_out, sdpa_grads = run("sdpa")
    eager_out, eager_grads = run("eager")
    torch.testing.assert_close(sdpa_out.logits, eager_out.logits, atol=atol, rtol=atol)
    for a, b in zip(sdpa_out.interaction_maps + sdpa_out.gates, eager_out.interaction_maps + eager_out.gates):
        torch.testing.assert_close(a, b, atol=atol, rtol=atol)
    assert sdpa_grads.keys() == eager_grads.keys()
    for name in sdpa_grads:
        torch.testing.assert_close(sdpa_grads[name], eager_grads[name], atol=atol * 10, rtol=atol * 10, msg=name)
    gate_grads = [g for n, g in sdpa_grads.items() if ".gate." in n]
    assert granularity == "none" or (gate_grads and all(g.abs().sum() > 0 for g in gate_grads))


@pytest.mark.parametrize("form", ["element", "row"])
def test_detr_sdpa_equals_eager_with_padding(form):
    """I-DETR on a padded batch: sdpa (boolean keep-mask, blockwise or fused) against eager (additive mask,
    materialised): outputs, student maps on the real positions, mean gates and gradients."""
    model = IDetrForObjectDetection(IDetrConfig(**tiny_detr_kwargs(gate_form=form))).double().eval()  # no dropout
    _diverge(model)
    pixel_values = torch.randn(2, 3, 64, 48, dtype=torch.float64)
    pixel_mask = torch.ones(2, 64, 48, dtype=torch.long)
    pixel_mask[1, :, 32:] = 0

    def run(implementation: str):
        model.set_attn_implementation({"": implementation})
        model.zero_grad()
        out = model(pixel_values, pixel_mask=pixel_mask, output_interactions=True)
        (
            out.logits.square().sum() + out.pred_boxes.sum() + sum(m[:, 0].sum() for m in out.interaction_maps)
        ).backward()
        return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    sdpa_out, sdpa_grads = run("sdpa")
    eager_out, eager_grads = run("eager")
    for key in ("logits", "pred_boxes", "interaction_maps", "gates"):
        torch.testing.assert_close(sdpa_out[key], eager_out[key], atol=1e-10, rtol=1e-10, msg=key)
    assert torch.all(sdpa_out.interaction_maps[0][1][~sdpa_out.interaction_mask[1]] == 0)
    for name in eager_grads:
        torch.testing.assert_close(sdpa_grads[name], eager_grads[name], atol=1e-9, rtol=1e-9, msg=name)


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


@pytest.mark.parametrize("form", ["row", "element"])
def test_sdpa_keeps_no_square_map(form, monkeypatch, caplog):
    """Under sdpa neither the fused nor the blockwise path calls the materialised block (which builds
    [batch, heads, 2N, N] scores); `output_attentions` then returns no C_F, with a warning; eager returns it."""
    monkeypatch.setattr(interaction_attention, "_interaction_attention_block", None)
    model = IViTModel(tiny_ivit_config(gate_form=form, interaction_layers=[1])).eval()
    assert model.config._attn_implementation == "sdpa"
    interaction_attention.logger.warning_once.cache_clear()
    out = model(torch.randn(2, 3, 30, 30), output_interactions=True, output_attentions=True)
    assert out.attentions == () and "set attn_implementation='eager' to get C_F" in caplog.text
    model.set_attn_implementation("eager")
    with pytest.raises(TypeError):
        model(torch.randn(2, 3, 30, 30))


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


def test_attention_implementations_follow_transformers_dispatch(monkeypatch):
    """sdpa by default on CPU, the kernel by default where CUDA and triton are present, eager on request; the
    `_supports_*` flags refuse what interaction layers cannot run; the kernel without triton is a clear error."""
    from hf_lfi.modeling import triton_attention
    from hf_lfi.modeling.interaction_attention import INTERACTION_KERNEL

    assert IViTModel(tiny_ivit_config()).config._attn_implementation == "sdpa"
    model = IViTModel(tiny_ivit_config(), add_pooling_layer=False)
    model.set_attn_implementation("eager")
    assert model.config._attn_implementation == "eager"
    for unsupported in ("flash_attention_2", "flex_attention"):
        with pytest.raises(ValueError, match="does not support"):
            model.set_attn_implementation(unsupported)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(triton_attention, "triton", object())  # triton "installed"
    assert IViTModel(tiny_ivit_config()).config._attn_implementation == INTERACTION_KERNEL
    detr = IDetrForObjectDetection(IDetrConfig(**tiny_detr_kwargs()))
    assert detr.config._attn_implementation == INTERACTION_KERNEL  # DETR's other layers and masks run SDPA
    monkeypatch.setattr(triton_attention, "triton", None)
    assert IViTModel(tiny_ivit_config()).config._attn_implementation == "sdpa"
    with pytest.raises(ValueError, match="needs triton"):
        model.set_attn_implementation(INTERACTION_KERNEL)
