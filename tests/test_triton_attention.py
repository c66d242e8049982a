"""The Triton kernel against the blockwise reference: outputs, student maps, mean gates and the gradients of every
input and gate parameter, with masks, partial blocks and padded head sizes. Without a GPU the kernels run on CPU
through Triton's interpreter (`TRITON_INTERPRET=1`, set by conftest), at small sizes; the larger cases are `slow`."""

import os

import pytest
import torch
from conftest import randomize_gates, tiny_detr_kwargs, tiny_ivit_config

pytest.importorskip("triton", reason="the interaction attention kernel needs triton (`pip install triton`)")

from hf_lfi import IDetrConfig, IDetrForObjectDetection, IViTForImageClassification  # noqa: E402
from hf_lfi.modeling import triton_attention  # noqa: E402
from hf_lfi.modeling.blockwise_attention import blockwise_interaction_attention  # noqa: E402
from hf_lfi.modeling.interaction_attention import INTERACTION_KERNEL, GatedControlNetwork  # noqa: E402

if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no GPU and TRITON_INTERPRET is not set", allow_module_level=True)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _attend(kernel, inputs, mask, gate, row_weights, source):
    params = gate.pair_gate_parameters(inputs[2].shape[2])
    if kernel:
        return triton_attention.triton_interaction_attention(
            *inputs, mask, 0.4, params, row_weights, source, True, block_m=16, block_n=16
        )
    return blockwise_interaction_attention(*inputs, mask, 0.4, params, row_weights, source, True)


def _compare(inputs, mask, gate, row_weights, source):
    """Kernel vs blockwise: outputs and the gradients of a loss reading the output and the column sums."""
    results = []
    for kernel in (False, True):
        output, columns, means = _attend(kernel, inputs, mask, gate, row_weights, source)
        loss = (output * torch.arange(output.numel(), device=DEVICE).view_as(output).sin()).sum()
        if columns is not None:
            loss = loss + (columns * torch.arange(columns.numel(), device=DEVICE).view_as(columns).cos()).sum()
        grads = torch.autograd.grad(loss, [*inputs, *gate.parameters()])
        results.append((output, columns, means, grads))
    (expected, *expected_rest), (actual, *actual_rest) = results
    torch.testing.assert_close(actual, expected, atol=2e-5, rtol=2e-5)
    for got, want in zip(actual_rest[:2], expected_rest[:2]):
        torch.testing.assert_close(got, want, atol=2e-5, rtol=2e-5)
    for got, want in zip(actual_rest[2], expected_rest[2]):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def _case(batch, heads, queries, head_dim, granularity, mask_kind):
    gate = GatedControlNetwork(heads if granularity == "head" else 1).to(DEVICE)
    randomize_gates(gate)
    inputs = [torch.randn(batch, heads, queries, head_dim, device=DEVICE) for _ in range(4)]
    inputs[1] = inputs[0] + 0.7 * inputs[1]
    inputs = [t.requires_grad_() for t in inputs]
    keep = torch.ones(batch, 1, queries, queries, dtype=torch.bool, device=DEVICE)
    keep[-1, ..., queries - 5 :] = False
    if mask_kind == "per_query":
        keep[0, 0, 2, :3] = False
    mask = {"boolean": keep, "per_query": keep, "none": None}.get(mask_kind)
    if mask_kind == "additive":
        mask = torch.zeros(keep.shape, device=DEVICE).masked_fill(~keep, torch.finfo(torch.float32).min)
    return inputs, mask, gate


@pytest.mark.parametrize(
    "granularity,mask_kind,reduction,source",
    [("head", "boolean", "mean", "interaction"), ("layer", "additive", "cls", "original")],
)
def test_kernel_equals_blockwise(granularity, mask_kind, reduction, source):
    """20 tokens in blocks of 16 (a partial block), head size 8 (padded to 16), padding masks, both gate groupings."""
    inputs, mask, gate = _case(2, 2, 20, 8, granularity, mask_kind)
    weights = torch.ones(2, 1, device=DEVICE) if reduction == "cls" else torch.full((2, 20), 1 / 20, device=DEVICE)
    _compare(inputs, mask, gate, weights, source)


@pytest.mark.slow
@pytest.mark.parametrize("mask_kind", ["per_query", "none"])
@pytest.mark.parametrize("queries,head_dim", [(33, 16), (48, 24)])
def test_kernel_equals_blockwise_more_shapes(mask_kind, queries, head_dim):
    inputs, mask, gate = _case(2, 3, queries, head_dim, "head", mask_kind)
    _compare(inputs, mask, gate, torch.full((2, queries), 1 / queries, device=DEVICE), "interaction")


def test_kernel_applies_to_what_it_computes():
    """float64 and the hidden-layer gate run the blockwise path; the linear gate in float32 the kernel."""
    query = torch.zeros(1, 1, 4, 8, device=DEVICE)
    linear, hidden = GatedControlNetwork(1), GatedControlNetwork(1, hidden_size=2)
    assert triton_attention.kernel_applies(query, linear.pair_gate_parameters(4))
    assert not triton_attention.kernel_applies(query.double(), linear.pair_gate_parameters(4))
    assert not triton_attention.kernel_applies(query, hidden.pair_gate_parameters(4))


def test_ivit_under_the_kernel_equals_sdpa():
    """I-ViT with attn_implementation="interaction_triton": logits, student maps, gates and gradients as under sdpa."""
    model = IViTForImageClassification(tiny_ivit_config(image_size=8, interaction_map_reduction="mean")).to(DEVICE)
    randomize_gates(model)
    pixel_values = torch.randn(2, 3, 8, 8, device=DEVICE)

    def run(implementation):
        model.set_attn_implementation(implementation)
        model.zero_grad()
        out = model(pixel_values, output_interactions=True)
        (out.logits.square().sum() + sum(m[:, 0].sum() for m in out.interaction_maps)).backward()
        return out, {n: p.grad.clone() for n, p in model.named_parameters()}

    kernel, kernel_grads = run(INTERACTION_KERNEL)
    sdpa, sdpa_grads = run("sdpa")
    for key in ("logits", "interaction_maps", "gates"):
        torch.testing.assert_close(kernel[key], sdpa[key], atol=2e-5, rtol=2e-5)
    for name, grad in sdpa_grads.items():
        torch.testing.assert_close(kernel_grads[name], grad, atol=1e-4, rtol=1e-4, msg=name)


@pytest.mark.slow
def test_idetr_under_the_kernel_equals_sdpa_with_padding():
    model = IDetrForObjectDetection(IDetrConfig(**tiny_detr_kwargs())).to(DEVICE).eval()
    randomize_gates(model)
    pixel_values = torch.randn(2, 3, 48, 40, device=DEVICE)
    pixel_mask = torch.ones(2, 48, 40, dtype=torch.long, device=DEVICE)
    pixel_mask[1, :, 24:] = 0
    outputs = {}
    for implementation in (INTERACTION_KERNEL, "sdpa"):
        model.set_attn_implementation({"": implementation})
        outputs[implementation] = model(pixel_values, pixel_mask=pixel_mask, output_interactions=True)
    for key in ("logits", "pred_boxes", "interaction_maps", "gates"):
        torch.testing.assert_close(outputs[INTERACTION_KERNEL][key], outputs["sdpa"][key], atol=2e-5, rtol=2e-5)
