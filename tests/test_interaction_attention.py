import pytest
import torch
from conftest import randomize_gates, run_attention, tiny_ivit_config
from reference import reference_gate, reference_interaction_attention, reference_student_map

from hf_lfi import GatedControlNetwork, student_map_from_attention
from hf_lfi.modeling import interaction_attention
from hf_lfi.modeling.interaction_attention import _PairGate
from hf_lfi.modeling.modeling_ivit import IViTAttention


@pytest.mark.parametrize("num_heads", [1, 2, 4])
@pytest.mark.parametrize("batch_size", [1, 3])
@pytest.mark.parametrize("granularity,hidden", [("head", 0), ("layer", 0), ("head", 3), ("layer", 2)])
@pytest.mark.parametrize("chunk_bytes", [None, 1])
def test_attention_matches_reference(num_heads, batch_size, granularity, hidden, chunk_bytes, monkeypatch):
    if chunk_bytes is not None:  # force the CPU path to work one batch item at a time
        monkeypatch.setattr(interaction_attention, "CPU_CHUNK_BYTES", chunk_bytes)
    config = tiny_ivit_config(num_attention_heads=num_heads, gate_granularity=granularity, gate_hidden_size=hidden)
    attention = IViTAttention(config).eval()
    with torch.no_grad():
        attention.interaction_q_proj.weight.normal_(std=0.3)  # make C_AGT differ from C_VFM
    randomize_gates(attention)
    x = torch.randn(batch_size, 17, config.hidden_size)

    out, fused, student_map, gate_means = run_attention(attention, x, output_interactions=True, output_attentions=True)
    ref_out, ref_fused, ref_agt, g1, g2 = reference_interaction_attention(attention, x)

    torch.testing.assert_close(out.double(), ref_out, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(fused.double(), ref_fused, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(student_map.double(), reference_student_map(ref_agt, "cls"), atol=1e-6, rtol=1e-4)
    ref_means = torch.stack([g1.mean(dim=(2, 3)), g2.mean(dim=(2, 3))], dim=-1)
    torch.testing.assert_close(gate_means.double(), ref_means, atol=1e-6, rtol=1e-4)
    assert not torch.allclose(ref_fused, ref_agt, atol=1e-3)  # the test really mixes two different maps


@pytest.mark.parametrize("num_groups,hidden", [(4, 0), (1, 0), (4, 3)])
def test_gate_gradients_match_autograd_reference(num_groups, hidden):
    gate = GatedControlNetwork(num_groups, hidden_size=hidden).double()
    randomize_gates(gate)
    agt = torch.softmax(torch.randn(2, 4, 5, 5, dtype=torch.float64), -1).requires_grad_()
    vfm = torch.softmax(torch.randn(2, 4, 5, 5, dtype=torch.float64), -1).requires_grad_()
    upstream = torch.randn(2, 4, 5, 5, dtype=torch.float64)

    fused, _ = gate(agt, vfm)
    grads = torch.autograd.grad((fused * upstream).sum(), [agt, vfm, *gate.parameters()])
    ref_fused, _, _ = reference_gate(agt, vfm, gate)
    ref_grads = torch.autograd.grad((ref_fused * upstream).sum(), [agt, vfm, *gate.parameters()])

    torch.testing.assert_close(fused, ref_fused)
    for grad, ref in zip(grads, ref_grads):
        torch.testing.assert_close(grad, ref)


@pytest.mark.parametrize("hidden", [0, 3])
def test_pair_gate_passes_gradcheck(hidden):
    gate = GatedControlNetwork(3, hidden_size=hidden).double()
    randomize_gates(gate)
    agt = torch.rand(1, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    vfm = torch.rand(1, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    fused_only = lambda a, v, *params: _PairGate.apply(a, v, False, *params)[0]  # noqa: E731
    assert torch.autograd.gradcheck(fused_only, (agt, vfm, *gate.parameters()))


def test_step_zero_gate_keeps_original_attention():
    """Zero gate weights and biases (-b, +b): g1 + g2 = 1, so C_F = C_VFM whenever C_AGT = C_VFM."""
    gate = GatedControlNetwork(4, init_bias=3.0)
    vfm = torch.softmax(torch.randn(2, 4, 6, 6), -1)
    fused, means = gate(vfm, vfm, return_gate_means=True)
    torch.testing.assert_close(fused, vfm)
    torch.testing.assert_close(means[..., 0], torch.full((2, 4), torch.sigmoid(torch.tensor(-3.0)).item()))
    torch.testing.assert_close(means.sum(-1), torch.ones(2, 4))


@pytest.mark.parametrize("reduction", ["cls", "mean"])
def test_student_map_reduction(reduction):
    agt = torch.softmax(torch.randn(2, 3, 5, 5, dtype=torch.float64), -1)
    student = student_map_from_attention(agt, reduction, num_prefix_tokens=1)
    torch.testing.assert_close(student, reference_student_map(agt, reduction))
    torch.testing.assert_close(student.sum(-1), torch.ones(2, dtype=torch.float64))


def test_student_map_respects_key_mask():
    agt = torch.softmax(torch.randn(1, 2, 4, 4, dtype=torch.float64), -1)
    key_mask = torch.tensor([[True, True, False, True]])
    student = student_map_from_attention(agt, "mean", num_prefix_tokens=0, key_mask=key_mask)
    rows = agt[:, :, [0, 1, 3]].mean(dim=2).mean(dim=1) * key_mask
    torch.testing.assert_close(student, rows / rows.sum(-1, keepdim=True))
    assert student[0, 2] == 0


@pytest.mark.parametrize("boolean", [True, False])
@pytest.mark.parametrize("per_item_mask", [True, False])
def test_attention_mask_excludes_keys(boolean, per_item_mask, monkeypatch):
    monkeypatch.setattr(interaction_attention, "CPU_CHUNK_BYTES", 1)
    config = tiny_ivit_config()
    attention = IViTAttention(config).eval()
    x = torch.randn(2, 6, config.hidden_size)
    keep = torch.tensor([True, True, True, True, False, False])
    mask = keep.view(1, 1, 1, 6).expand(2 if per_item_mask else 1, 1, 6, 6)
    if not boolean:
        mask = torch.zeros(mask.shape).masked_fill(~mask, torch.finfo(torch.float32).min)
    out, fused, _, _ = run_attention(attention, x, mask, output_attentions=True)
    assert torch.all(fused[..., 4:] == 0)
    torch.testing.assert_close(fused.sum(-1), torch.ones_like(fused.sum(-1)))
