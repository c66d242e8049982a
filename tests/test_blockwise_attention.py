"""The blockwise per-element path against the materialised one (today's eager path): outputs, student maps, mean gates
and gradients of every input and gate parameter, float64 to 1e-10 and float32, every gate granularity and hidden
size, boolean / additive / per-query masks, one key block or the two-pass form; and its memory: no N x N tensor."""

import pytest
import torch
from conftest import randomize_gates
from torch.utils._python_dispatch import TorchDispatchMode

from hf_lfi.modeling.blockwise_attention import block_sizes, blockwise_interaction_attention
from hf_lfi.modeling.interaction_attention import (
    GatedControlNetwork,
    StudentMapRequest,
    materialised_interaction_attention,
)

GATES = [("head", 0), ("layer", 0), ("head", 3), ("layer", 2)]


class _Layer(torch.nn.Module):
    """The two attributes the attention functions read from a layer."""

    def __init__(self, gate):
        super().__init__()
        self.gate = gate


def _inputs(dtype, batch=2, heads=3, queries=13, keys=13, head_dim=8):
    tensors = [torch.randn(batch, heads, n, head_dim, dtype=dtype) for n in (queries, queries, keys, keys)]
    tensors[1] = tensors[0] + 0.7 * tensors[1]  # P'_q near P_q, as after conversion and some training
    return [t.requires_grad_() for t in tensors]


def _mask(kind, batch, queries, keys, dtype):
    keep = torch.ones(batch, queries, keys, dtype=torch.bool)
    keep[1, :, keys - 4 :] = False  # padding of the second item
    if kind == "per_query":
        keep[0, 3, :5] = False
    if kind == "none":
        return None, None
    mask = keep[:, None]
    key_mask = keep[:, 0] if kind != "per_query" else None
    if kind == "additive":
        mask = torch.zeros(mask.shape, dtype=dtype).masked_fill(~mask, torch.finfo(dtype).min)
    return mask, key_mask


def _loss(output, student, dtype):
    """A loss that weighs every output entry and student map entry differently."""
    weights = torch.arange(output.numel(), dtype=dtype).view_as(output).sin()
    loss = (output * weights).sum()
    if student is not None:
        loss = loss + (student * torch.arange(student.numel(), dtype=dtype).view_as(student).cos()).sum()
    return loss


def _run_both(gate, inputs, mask, student_map, scaling, **blocks):
    """(outputs, student map, gate means, gradients) of the materialised and of the blockwise path."""
    dtype = inputs[0].dtype
    params = list(gate.parameters())
    results = []
    for blockwise in (False, True):
        if blockwise:
            num_keys = inputs[2].shape[2]
            rows = (
                student_map.row_weights(inputs[0].shape[0], inputs[0].shape[2], dtype, "cpu") if student_map else None
            )
            output, columns, means = blockwise_interaction_attention(
                *inputs,
                mask,
                scaling,
                gate.pair_gate_parameters(num_keys),
                rows,
                student_map.source if student_map else "interaction",
                return_gate_means=student_map is not None,
                **blocks,
            )
            output = output.transpose(1, 2)
            student = student_map.from_rows(columns) if student_map else None
        else:
            output, _, student, means = materialised_interaction_attention(
                _Layer(gate), *inputs, mask, scaling, 0.0, student_map
            )
        grads = torch.autograd.grad(_loss(output, student, dtype), [*inputs, *params])
        results.append((output, student, means, grads))
    return results


@pytest.mark.parametrize("granularity,hidden", GATES)
@pytest.mark.parametrize("dtype,tolerance", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
@pytest.mark.parametrize("blocks", [{}, {"query_block": 4, "key_block": 5}], ids=["one-key-block", "two-pass"])
def test_blockwise_equals_materialised(granularity, hidden, dtype, tolerance, blocks):
    heads = 3
    gate = GatedControlNetwork(heads if granularity == "head" else 1, hidden_size=hidden).to(dtype)
    randomize_gates(gate)
    inputs = _inputs(dtype, heads=heads)
    student_map = StudentMapRequest("cls", num_prefix_tokens=1)
    (expected, *rest), (actual, *actual_rest) = _run_both(gate, inputs, None, student_map, 0.35, **blocks)
    torch.testing.assert_close(actual, expected, atol=tolerance, rtol=tolerance)
    for got, want in zip(actual_rest[:2], rest[:2]):  # student map, gate means
        torch.testing.assert_close(got, want, atol=tolerance, rtol=tolerance)
    for got, want in zip(actual_rest[2], rest[2]):  # P_q, P'_q, P_k, P_v, every gate parameter
        torch.testing.assert_close(got, want, atol=tolerance * 10, rtol=tolerance * 10)
    assert all(g.abs().sum() > 0 for g in actual_rest[2])  # every input and parameter gets a gradient


@pytest.mark.parametrize("mask_kind", ["boolean", "additive", "per_query", "none"])
@pytest.mark.parametrize("reduction,source", [("mean", "interaction"), ("cls", "original"), ("mean", "original")])
@pytest.mark.parametrize("blocks", [{}, {"query_block": 3, "key_block": 4}], ids=["one-key-block", "two-pass"])
def test_blockwise_masks_and_student_maps(mask_kind, reduction, source, blocks):
    dtype = torch.float64
    gate = GatedControlNetwork(3).to(dtype)
    randomize_gates(gate)
    inputs = _inputs(dtype, queries=11, keys=11)
    mask, key_mask = _mask(mask_kind, 2, 11, 11, dtype)
    student_map = StudentMapRequest(reduction, 0, source, key_mask)
    (expected, *rest), (actual, *actual_rest) = _run_both(gate, inputs, mask, student_map, 0.3, **blocks)
    torch.testing.assert_close(actual, expected, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(actual_rest[0], rest[0], atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(actual_rest[1], rest[1], atol=1e-10, rtol=1e-10)
    for got, want in zip(actual_rest[2], rest[2]):
        torch.testing.assert_close(got, want, atol=1e-9, rtol=1e-9)
    if key_mask is not None:
        assert torch.all(actual_rest[0][~key_mask] == 0)  # padded keys get no student map


def test_blockwise_without_student_map_and_half_inputs():
    """No student map: no column sums, no gate means; bfloat16 inputs keep a float32 softmax, as the eager path."""
    gate = GatedControlNetwork(2)
    randomize_gates(gate)
    inputs = [t.detach().bfloat16() for t in _inputs(torch.float32, heads=2)]
    output, columns, means = blockwise_interaction_attention(*inputs, None, 0.35, gate.pair_gate_parameters(13))
    assert columns is None and means is None and output.dtype == torch.bfloat16
    expected = materialised_interaction_attention(_Layer(gate.bfloat16()), *inputs, None, 0.35)[0]
    torch.testing.assert_close(output.transpose(1, 2), expected, atol=2e-2, rtol=2e-2)


class _LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an operation produces."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(tensor, torch.Tensor):
                self.largest = max(self.largest, tensor.numel())
        return out


@pytest.mark.parametrize("num_tokens", [64, 256])
def test_blockwise_memory_grows_with_blocks_not_with_n_squared(num_tokens):
    """Forward and backward never produce a tensor of N x N entries per head: the largest is a block of
    [heads, 2 * rows, keys] (rows from the byte budget), O(N) for a fixed budget."""
    heads, block_rows = 2, 8
    gate = GatedControlNetwork(heads)
    randomize_gates(gate)
    inputs = _inputs(torch.float32, batch=1, heads=heads, queries=num_tokens, keys=num_tokens, head_dim=4)
    with _LargestTensor() as tracker:
        output, columns, _ = blockwise_interaction_attention(
            *inputs, None, 0.5, gate.pair_gate_parameters(num_tokens), torch.ones(1, 1), query_block=block_rows
        )
        (output.sum() + columns.sum()).backward()
    assert tracker.largest <= heads * 2 * block_rows * num_tokens < heads * num_tokens**2
    # the default budget: a block of one image's rows holds at most `block_bytes`
    assert block_sizes(8, 6, 1370, 1370, 4, 4 * 2**20) == (1, 63)
    assert block_sizes(8, 6, 197, 197, 4, 4 * 2**20) == (2, 197)


@pytest.mark.parametrize("blocks", [{}, {"query_block": 4, "key_block": 5}], ids=["one-key-block", "two-pass"])
def test_blockwise_inference_equals_materialised(blocks):
    """Without gradients (one key block: the fused softmax, no row statistics kept), float64 to 1e-10."""
    gate = GatedControlNetwork(3).double()
    randomize_gates(gate)
    inputs = [t.detach() for t in _inputs(torch.float64)]
    student_map = StudentMapRequest("mean", num_prefix_tokens=1)
    with torch.no_grad():
        rows = student_map.row_weights(2, 13, torch.float64, "cpu")
        output, columns, means = blockwise_interaction_attention(
            *inputs, None, 0.35, gate.pair_gate_parameters(13), rows, return_gate_means=True, **blocks
        )
        expected, _, student, expected_means = materialised_interaction_attention(
            _Layer(gate), *inputs, None, 0.35, 0.0, student_map
        )
    torch.testing.assert_close(output.transpose(1, 2), expected, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(student_map.from_rows(columns), student, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(means, expected_means, atol=1e-10, rtol=1e-10)
