import pytest
import torch
from conftest import randomize_gates, run_attention, tiny_ivit_config
from reference import reference_interaction_attention, reference_plain_attention, reference_student_map

from hf_lfi import IViTForImageClassification, IViTModel
from hf_lfi.modeling.modeling_ivit import IViTAttention


def reference_forward(model: IViTModel, pixel_values, interpolate):
    """The whole encoder in float64 with the reference attention; returns (last hidden state, student maps)."""

    def ln(norm, t):
        return torch.nn.functional.layer_norm(
            t, norm.normalized_shape, norm.weight.double(), norm.bias.double(), norm.eps
        )

    x = model.embeddings(pixel_values, interpolate_pos_encoding=interpolate).double()
    maps = []
    for layer in model.layers:
        normed = ln(layer.layernorm_before, x)
        if isinstance(layer.attention, IViTAttention):
            out, _, agt, _, _ = reference_interaction_attention(layer.attention, normed)
            maps.append(reference_student_map(agt, model.config.interaction_map_reduction))
        else:
            out = reference_plain_attention(layer.attention, normed)
        x = x + out
        h = ln(layer.layernorm_after, x)
        h = torch.nn.functional.linear(h, layer.mlp.fc1.weight.double(), layer.mlp.fc1.bias.double())
        h = torch.nn.functional.gelu(h)
        x = x + torch.nn.functional.linear(h, layer.mlp.fc2.weight.double(), layer.mlp.fc2.bias.double())
    return ln(model.layernorm, x), maps


@pytest.mark.parametrize("num_heads", [2, 4])
@pytest.mark.parametrize("batch_size", [1, 2])
@pytest.mark.parametrize("image_size,interpolate", [((30, 30), False), ((22, 26), True), ((36, 36), True)])
@pytest.mark.parametrize("interaction_layers", [None, [1], [0, 2]])
@pytest.mark.parametrize("reduction", ["cls", "mean"])
def test_model_matches_reference(num_heads, batch_size, image_size, interpolate, interaction_layers, reduction):
    config = tiny_ivit_config(
        num_attention_heads=num_heads,
        num_hidden_layers=3,
        interaction_layers=interaction_layers,
        interaction_map_reduction=reduction,
    )
    model = IViTModel(config).eval()
    randomize_gates(model)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, IViTAttention):
                module.interaction_q_proj.weight.normal_(std=0.3)
    pixel_values = torch.randn(batch_size, 3, *image_size)

    out = model(pixel_values, interpolate_pos_encoding=interpolate, output_interactions=True)
    ref_hidden, ref_maps = reference_forward(model, pixel_values, interpolate)

    torch.testing.assert_close(out.last_hidden_state.double(), ref_hidden, atol=1e-4, rtol=1e-4)
    grid = (image_size[0] // 2, image_size[1] // 2)
    layers = interaction_layers if interaction_layers is not None else [0, 1, 2]
    assert len(out.interaction_maps) == len(ref_maps) == len(layers) == len(out.gates)
    for student, ref in zip(out.interaction_maps, ref_maps):
        assert student.shape == (batch_size, *grid)
        torch.testing.assert_close(student.flatten(1).double(), ref, atol=1e-6, rtol=1e-4)
    for gates in out.gates:
        assert gates.shape == (batch_size, num_heads, 2)
        assert torch.all((gates > 0) & (gates < 1))


def test_interactions_only_when_asked():
    model = IViTForImageClassification(tiny_ivit_config()).eval()
    out = model(torch.randn(1, 3, 30, 30))
    assert out.interaction_maps is None and out.gates is None
    assert model(torch.randn(1, 3, 30, 30), return_dict=False)[0].shape == (1, 3)


def test_hidden_states_and_attentions_are_recorded():
    config = tiny_ivit_config(interaction_layers=[1])
    config._attn_implementation = "eager"
    model = IViTModel(config).eval()
    out = model(torch.randn(2, 3, 30, 30), output_hidden_states=True, output_attentions=True)
    assert len(out.hidden_states) == 3 and len(out.attentions) == 2
    for attention in out.attentions:  # C_F for the interaction layer, plain softmax for the other
        assert attention.shape == (2, 4, 226, 226)
        torch.testing.assert_close(attention.sum(-1), torch.ones(2, 4, 226))


def test_gradient_checkpointing_gives_same_gradients():
    config = tiny_ivit_config()
    model = IViTForImageClassification(config).train()
    randomize_gates(model)
    pixel_values, labels = torch.randn(2, 3, 30, 30), torch.tensor([0, 2])

    def gradients():
        model.zero_grad()
        out = model(pixel_values, labels=labels, output_interactions=True)
        (out.loss + out.interaction_maps[0].pow(2).sum()).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = gradients()
    model.activation_checkpointing_enable()
    assert all(layer.gradient_checkpointing for layer in model.vit.layers)
    checkpointed = gradients()
    assert plain.keys() == checkpointed.keys() and any("interaction_q_proj" in n for n in plain)
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], msg=name)


def test_attention_dropout_applies_in_training_only():
    model = IViTModel(tiny_ivit_config(attention_probs_dropout_prob=0.5))
    x = torch.randn(1, 3, 30, 30)
    model.eval()
    torch.testing.assert_close(model(x).last_hidden_state, model(x).last_hidden_state)
    model.train()
    assert not torch.allclose(model(x).last_hidden_state, model(x).last_hidden_state)


def test_loss_and_labels():
    model = IViTForImageClassification(tiny_ivit_config())
    out = model(torch.randn(2, 3, 30, 30), labels=torch.tensor([0, 1]))
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, torch.tensor([0, 1])))


@pytest.mark.parametrize(
    "pixel_values,kwargs,message",
    [
        (torch.randn(1, 1, 30, 30), {}, "1 channel\\(s\\); the model takes config.num_channels=3"),
        (torch.randn(1, 3, 32, 32), {}, "Image size 32x32 differs from the model's 30x30"),
        (torch.randn(1, 3, 31, 31), {"interpolate_pos_encoding": True}, "not divisible by the patch size"),
        (torch.randn(3, 30, 30), {}, "must be \\(batch, channels, height, width\\)"),
        (torch.randn(2, 3, 30, 30), {"labels": torch.tensor([0, 3])}, "labels must lie in \\[0, 3\\)"),
    ],
)
def test_bad_input_raises_clear_error(pixel_values, kwargs, message):
    model = IViTForImageClassification(tiny_ivit_config())
    with pytest.raises(ValueError, match=message):
        model(pixel_values, **kwargs)


def test_cpu_chunking_gives_same_outputs_and_gradients(monkeypatch):
    from hf_lfi.modeling import interaction_attention

    model = IViTForImageClassification(tiny_ivit_config()).train()
    randomize_gates(model)
    pixel_values, labels = torch.randn(3, 3, 30, 30), torch.tensor([0, 2, 1])

    def run():
        model.zero_grad()
        out = model(pixel_values, labels=labels, output_interactions=True)
        (out.loss + out.interaction_maps[1].pow(2).sum()).backward()
        return out, {n: p.grad.clone() for n, p in model.named_parameters()}

    whole, whole_grads = run()
    monkeypatch.setattr(interaction_attention, "CPU_CHUNK_BYTES", 1)  # one image per chunk
    chunked, chunked_grads = run()
    torch.testing.assert_close(chunked.logits, whole.logits)
    torch.testing.assert_close(chunked.interaction_maps, whole.interaction_maps)
    torch.testing.assert_close(chunked.gates, whole.gates)
    for name in whole_grads:
        torch.testing.assert_close(chunked_grads[name], whole_grads[name], msg=name)


def test_table3_ablation_options():
    """gate_granularity="none": C_F = (C_AGT + C_VFM) / 2 with no gate parameters; student_map_source="original":
    the student map (hence the alignment loss) reads C_VFM instead of C_AGT."""
    from conftest import tiny_vit

    from hf_lfi import parameter_report

    no_gate = tiny_ivit_config(gate_granularity="none")
    attention = IViTAttention(no_gate).eval()
    assert not list(attention.gate.parameters())
    hidden = torch.randn(2, 5, 32)
    with torch.no_grad():
        attention.interaction_q_proj.weight.normal_()  # make C_AGT differ from C_VFM
    _, fused, _, gates = run_attention(attention, hidden, output_interactions=True, output_attentions=True)

    def softmax_attention(module, projection):
        q = projection(hidden).view(2, 5, 4, 8).transpose(1, 2).double()
        k = module.k_proj(hidden).view(2, 5, 4, 8).transpose(1, 2).double()
        return torch.softmax(q @ k.transpose(-1, -2) / 8**0.5, -1)

    agt, vfm = (
        softmax_attention(attention, attention.interaction_q_proj),
        softmax_attention(attention, attention.q_proj),
    )
    torch.testing.assert_close(fused.double(), (agt + vfm) / 2, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(gates, torch.full((2, 4, 2), 0.5))
    assert (
        parameter_report(no_gate)["overhead"] == parameter_report(no_gate)["expected_overhead"] == 2 * (32 * 32 + 32)
    )
    vit = tiny_vit()
    converted = IViTForImageClassification.from_vit(vit, gate_granularity="none").eval()
    x = torch.randn(2, 3, 30, 30)
    torch.testing.assert_close(converted(x).logits, vit(x).logits, atol=1e-5, rtol=1e-4)  # still step-0 equivalent

    original = IViTAttention(tiny_ivit_config(student_map_source="original")).eval()
    with torch.no_grad():
        original.interaction_q_proj.weight.normal_()  # make C_AGT differ from C_VFM
    _, _, student, _ = run_attention(original, hidden, output_interactions=True)
    expected = reference_student_map(softmax_attention(original, original.q_proj), "cls")
    torch.testing.assert_close(student.double(), expected, atol=1e-6, rtol=1e-5)
