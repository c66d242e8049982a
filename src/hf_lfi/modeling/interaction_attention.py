"""Interaction attention (paper Eq. 3-8), shared by I-ViT and I-DETR.

The original queries P_q and the interaction queries P'_q attend to the same keys P_k. Both attention maps come out
of one batched matmul over the stacked queries [P_q; P'_q]; a gated control network (GCN) mixes them per element.
This file imports only torch and transformers so that it travels with the remote code of saved checkpoints.
"""

import torch
from torch import nn
from transformers import initialization as init


def _sum_to_group(tensor: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Sum a [batch, heads, rows, cols] tensor down to one value per gate group ([num_groups])."""
    per_head = tensor.sum(dim=(0, 2, 3))
    return per_head if num_groups == per_head.shape[0] else per_head.sum().reshape(1)


class _LinearPairGate(torch.autograd.Function):
    """C_F = g1 * C_AGT + g2 * C_VFM with [g1, g2] = sigmoid(W [C_AGT, C_VFM] + b) (Eq. 5-6, linear GCN).

    A hand-written backward keeps only the two attention maps alive (the softmax saves them anyway) instead of
    the half-dozen elementwise intermediates autograd would store, and never stacks a [..., 2] pair tensor.
    """

    @staticmethod
    def _gates(agt, vfm, weight, bias):
        # weight: [groups, 2 (g1, g2), 2 (C_AGT, C_VFM)], bias: [groups, 2]; broadcast over [batch, heads, i, j]
        # (out-of-place addcmul with a broadcast first operand is several times slower than mul + in-place ops)
        w = weight.view(-1, 2, 2, 1, 1)
        b = bias.view(-1, 2, 1, 1)
        g1 = (agt * w[:, 0, 0]).addcmul_(vfm, w[:, 0, 1]).add_(b[:, 0]).sigmoid_()
        g2 = (agt * w[:, 1, 0]).addcmul_(vfm, w[:, 1, 1]).add_(b[:, 1]).sigmoid_()
        return g1, g2

    @staticmethod
    def forward(ctx, agt, vfm, weight, bias, return_gate_means):
        g1, g2 = _LinearPairGate._gates(agt, vfm, weight, bias)
        gate_means = torch.stack([g1.mean(dim=(2, 3)), g2.mean(dim=(2, 3))], dim=-1) if return_gate_means else None
        fused = g1.mul_(agt).addcmul_(g2, vfm)
        ctx.save_for_backward(agt, vfm, weight, bias)
        if gate_means is not None:
            ctx.mark_non_differentiable(gate_means)
        return fused, gate_means

    @staticmethod
    def backward(ctx, grad_fused, _grad_gate_means):
        agt, vfm, weight, bias = ctx.saved_tensors
        g1, g2 = _LinearPairGate._gates(agt, vfm, weight, bias)
        w = weight.view(-1, 2, 2, 1, 1)
        # dz_k = dF * input_k * g_k * (1 - g_k): the sigmoid's derivative times what g_k multiplies
        dz1 = grad_fused * agt * g1 * (1 - g1)
        dz2 = grad_fused * vfm * g2 * (1 - g2)
        grad_agt = (grad_fused * g1).addcmul_(dz1, w[:, 0, 0]).addcmul_(dz2, w[:, 1, 0])
        grad_vfm = (grad_fused * g2).addcmul_(dz1, w[:, 0, 1]).addcmul_(dz2, w[:, 1, 1])
        groups = weight.shape[0]
        grad_weight = torch.stack(
            [
                torch.stack([_sum_to_group(dz1 * agt, groups), _sum_to_group(dz1 * vfm, groups)], -1),
                torch.stack([_sum_to_group(dz2 * agt, groups), _sum_to_group(dz2 * vfm, groups)], -1),
            ],
            dim=1,
        )
        grad_bias = torch.stack([_sum_to_group(dz1, groups), _sum_to_group(dz2, groups)], -1)
        return grad_agt, grad_vfm, grad_weight, grad_bias, None


class GatedControlNetwork(nn.Module):
    """The gated control network of Eq. 5-6, applied to each pair (C_AGT[ij], C_VFM[ij]).

    It never depends on the sequence length: one tiny FFN per head (or per layer) is shared by all positions.
    With `hidden_size=0` it is linear (`[g1, g2] = sigmoid(W [C_AGT, C_VFM] + b)`, 6 parameters per group);
    otherwise `sigmoid(W2 GELU(W1 [C_AGT, C_VFM] + b1) + b2)`.
    """

    def __init__(self, num_groups: int, hidden_size: int = 0, init_bias: float = 2.0):
        super().__init__()
        self.num_groups = num_groups
        self.hidden_size = hidden_size
        self.init_bias = init_bias
        in_features = 2 if hidden_size == 0 else hidden_size
        self.weight = nn.Parameter(torch.empty(num_groups, 2, in_features))  # [groups, (g1, g2), in]
        self.bias = nn.Parameter(torch.empty(num_groups, 2))
        if hidden_size > 0:
            self.hidden_weight = nn.Parameter(torch.empty(num_groups, hidden_size, 2))
            self.hidden_bias = nn.Parameter(torch.empty(num_groups, hidden_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Zero output weights and biases (-b, +b): g1 + g2 = 1 exactly, so C_F = C_VFM while C_AGT = C_VFM.

        Uses `transformers.initialization`, which leaves weights loaded from a checkpoint untouched.
        """
        init.zeros_(self.weight)
        init.copy_(self.bias, torch.tensor([-self.init_bias, self.init_bias]).repeat(self.num_groups, 1))
        if self.hidden_size > 0:
            init.normal_(self.hidden_weight, std=1.0)
            init.zeros_(self.hidden_bias)

    def forward(
        self, agt: torch.Tensor, vfm: torch.Tensor, return_gate_means: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Fuse C_AGT and C_VFM ([batch, heads, queries, keys]) into C_F (Eq. 6).

        Returns C_F and, if asked, the mean gates [batch, heads, 2] (g1 then g2) for plotting (paper Fig. 11).
        """
        if self.hidden_size == 0:
            return _LinearPairGate.apply(agt, vfm, self.weight, self.bias, return_gate_means)
        heads = agt.shape[1]
        pair = torch.stack([agt, vfm], dim=-1)  # [b, h, i, j, 2]; only in this optional, costlier form
        hidden = torch.einsum("bhijp,hkp->bhijk", pair, self.hidden_weight.expand(heads, -1, -1))
        hidden = nn.functional.gelu(hidden + self.hidden_bias.expand(heads, -1)[None, :, None, None])
        logits = torch.einsum("bhijk,hgk->bhijg", hidden, self.weight.expand(heads, -1, -1))
        logits = logits + self.bias.expand(heads, -1)[None, :, None, None]
        gates = logits.sigmoid()
        fused = (gates * pair).sum(-1)
        gate_means = gates.mean(dim=(2, 3)).detach() if return_gate_means else None
        return fused, gate_means


class FixedMix(nn.Module):
    """No gated control network (the paper's Table 3 ablation "without gate"): C_F = (C_AGT + C_VFM) / 2."""

    def forward(self, agt: torch.Tensor, vfm: torch.Tensor, return_gate_means: bool = False):
        gate_means = agt.new_full((agt.shape[0], agt.shape[1], 2), 0.5) if return_gate_means else None
        return (agt + vfm) * 0.5, gate_means


def build_gate(granularity: str, num_heads: int, hidden_size: int, init_bias: float) -> nn.Module:
    """The layer's mixer of C_AGT and C_VFM: a `GatedControlNetwork` per head or per layer, or `FixedMix` ("none")."""
    if granularity == "none":
        return FixedMix()
    return GatedControlNetwork(num_heads if granularity == "head" else 1, hidden_size, init_bias)


# On CPU the elementwise passes (softmax, gate) are memory-bound: working on batch chunks whose scores fit in the
# L2 cache, instead of allocating whole [batch, heads, 2N, N] tensors, measured 1.9x faster per layer (ViT-S, batch 8).
CPU_CHUNK_BYTES = 4 * 2**20


def interaction_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    interaction_query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    student_map_reduction: str | None = None,
    num_prefix_tokens: int = 0,
    return_attention_weights: bool = False,
    key_mask: torch.Tensor | None = None,
    student_map_source: str = "interaction",
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Eq. 3-8 for one layer. `module.gate` is the layer's `GatedControlNetwork`.

    Args:
        query, interaction_query: P_q and P'_q, [batch, heads, queries, head_dim].
        key, value: P_k (shared by both query sets) and P_v, [batch, heads, keys, head_dim].
        attention_mask: additive float mask or boolean keep-mask broadcastable to [batch, heads, queries, keys].
        student_map_reduction: if set (`"cls"`/`"mean"`), also return the student map read from C_AGT
            (`student_map_from_attention`) and the mean gates.
        return_attention_weights: also return C_F.
        key_mask: [batch, keys] bool, True for real (unpadded) positions: the student map ignores the others.
        student_map_source: read the student map from C_AGT (`"interaction"`, the paper) or from C_VFM
            (`"original"`: the Table 3 ablation that puts the constraint on the original queries).

    Returns:
        `(C_F @ P_v` as [batch, queries, heads, head_dim], C_F or None, student map or None, mean gates or None)`.
    """
    batch_size, num_heads, num_queries = query.shape[:3]
    chunk = batch_size
    if query.device.type == "cpu":
        bytes_per_item = num_heads * 2 * num_queries * key.shape[2] * query.element_size()
        chunk = max(1, CPU_CHUNK_BYTES // bytes_per_item)
    outputs, fused_parts, student_maps, gate_means = [], [], [], []
    for start in range(0, batch_size, chunk):
        rows = slice(start, start + chunk)
        mask = attention_mask[rows] if attention_mask is not None and attention_mask.shape[0] > 1 else attention_mask
        output, fused, student_map, gates = _interaction_attention_block(
            module, query[rows], interaction_query[rows], key[rows], value[rows], mask, scaling, dropout,
            student_map_reduction, num_prefix_tokens, key_mask[rows] if key_mask is not None else None,
            student_map_source,
        )
        outputs.append(output)
        if return_attention_weights:  # otherwise let each chunk's C_F go as soon as it is used
            fused_parts.append(fused)
        if student_map is not None:
            student_maps.append(student_map)
            gate_means.append(gates)
    return (
        torch.cat(outputs),
        torch.cat(fused_parts) if fused_parts else None,
        torch.cat(student_maps) if student_maps else None,
        torch.cat(gate_means) if gate_means else None,
    )


def _interaction_attention_block(
    module, query, interaction_query, key, value, attention_mask, scaling, dropout, student_map_reduction,
    num_prefix_tokens, key_mask, student_map_source,
):
    num_queries = query.shape[2]
    # one matmul for Eq. 3 and Eq. 4: the stacked queries [P_q; P'_q] against the shared keys
    stacked = torch.cat([query, interaction_query], dim=2) * scaling
    scores = torch.matmul(stacked, key.transpose(2, 3))
    if attention_mask is not None:
        mask = torch.cat([attention_mask, attention_mask], dim=2) if attention_mask.shape[2] > 1 else attention_mask
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + mask
    probs = nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    vfm, agt = probs.split(num_queries, dim=2)  # C_VFM (Eq. 3), C_AGT (Eq. 4)
    student_map = None
    if student_map_reduction is not None:
        source = vfm if student_map_source == "original" else agt
        student_map = student_map_from_attention(source, student_map_reduction, num_prefix_tokens, key_mask)
    fused, gate_means = module.gate(agt, vfm, return_gate_means=student_map_reduction is not None)  # Eq. 5-6
    fused = nn.functional.dropout(fused, p=dropout, training=module.training)
    output = torch.matmul(fused, value).transpose(1, 2).contiguous()  # C_F @ P_v, projected by the caller (Eq. 8)
    return output, fused, student_map, gate_means


def student_map_from_attention(
    agt: torch.Tensor, reduction: str, num_prefix_tokens: int, key_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """The student map compared with the teacher's C_VLM: a distribution over the image tokens, [batch, keys].

    `reduction="cls"` reads the first query row, `"mean"` averages all query rows (restricted to `key_mask` where
    given, e.g. DETR's unpadded positions); heads are averaged; the first `num_prefix_tokens` keys (CLS) and masked
    keys are dropped; the result is renormalised to sum to 1.
    """
    if reduction == "cls":
        rows = agt[:, :, 0]
    elif key_mask is None:
        rows = agt.mean(dim=2)
    else:
        weights = key_mask[:, None, :, None].to(agt.dtype)  # query rows of padded positions don't count
        rows = (agt * weights).sum(dim=2) / weights.sum(dim=2).clamp_min(1)
    student = rows.mean(dim=1)[:, num_prefix_tokens:]
    if key_mask is not None:
        student = student * key_mask.to(student.dtype)
    return student / student.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(student.dtype).tiny)


__all__ = [
    "FixedMix",
    "GatedControlNetwork",
    "build_gate",
    "interaction_attention_forward",
    "student_map_from_attention",
]
