"""Interaction attention (paper Eq. 3-8), shared by I-ViT and I-DETR.

The original queries P_q and the interaction queries P'_q attend to the same keys P_k. Both attention maps come out
of one batched matmul over the stacked queries [P_q; P'_q]; a gated control network (GCN) mixes them per element.
Gates that do not read individual attention entries (per query row, per head, fixed) allow the fused path:
C_F @ P_v = g1 (C_AGT @ P_v) + g2 (C_VFM @ P_v) through `scaled_dot_product_attention`, no N x N map kept.
This file imports only torch and transformers so that it travels with the remote code of saved checkpoints.
"""

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AttentionInterface
from transformers import initialization as init
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
from transformers.utils import logging
from transformers.utils.output_capturing import OutputRecorder

from .blockwise_attention import BLOCK_BYTES, blockwise_interaction_attention
from .pair_gates import pair_gates, pair_gates_backward
from .triton_attention import kernel_applies, triton_interaction_attention

logger = logging.get_logger(__name__)


class _PairGate(torch.autograd.Function):
    """C_F = g1 * C_AGT + g2 * C_VFM with the per-element gates of `pair_gates` (Eq. 5-6).

    A hand-written backward (`pair_gates_backward`) keeps only the two attention maps alive (the softmax saves them
    anyway) instead of the half-dozen elementwise intermediates autograd would store, and never stacks a [..., 2] pair
    tensor.
    """

    @staticmethod
    def forward(ctx, agt, vfm, return_gate_means, *params):
        g1, g2 = pair_gates(agt, vfm, params)
        gate_means = torch.stack([g1.mean(dim=(2, 3)), g2.mean(dim=(2, 3))], dim=-1) if return_gate_means else None
        fused = g1.mul_(agt).addcmul_(g2, vfm)
        ctx.save_for_backward(agt, vfm, *params)
        if gate_means is not None:
            ctx.mark_non_differentiable(gate_means)
        return fused, gate_means

    @staticmethod
    def backward(ctx, grad_fused, _grad_gate_means):
        agt, vfm, *params = ctx.saved_tensors
        g1, g2 = pair_gates(agt, vfm, params)
        grad_agt, grad_vfm, grad_params = pair_gates_backward(grad_fused, agt, vfm, params, g1, g2)
        return grad_agt, grad_vfm, None, *grad_params


class GatedControlNetwork(nn.Module):
    """The gated control network of Eq. 5-6, applied to each pair (C_AGT[ij], C_VFM[ij]).

    It never depends on the sequence length: one tiny FFN per head (or per layer) is shared by all positions.
    With `hidden_size=0` it is linear (`[g1, g2] = sigmoid(W [C_AGT, C_VFM] + b)`, 6 parameters per group);
    otherwise `sigmoid(W2 GELU(W1 [C_AGT, C_VFM] + b1) + b2)`.

    `input_scale="num_keys"` feeds N * C instead of C (N keys): uniform attention reads 1 at any sequence length, so
    the weights act on inputs of order 1 instead of ~1/N and the gate can respond to the maps (issue 11).
    """

    reads_attention = True

    def __init__(self, num_groups: int, hidden_size: int = 0, init_bias: float = 0.0, input_scale: str = "num_keys"):
        super().__init__()
        self.num_groups = num_groups
        self.hidden_size = hidden_size
        self.init_bias = init_bias
        self.input_scale = input_scale
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
        return _PairGate.apply(agt, vfm, return_gate_means, *self.pair_gate_parameters(agt.shape[-1]))

    def pair_gate_parameters(self, num_keys: int) -> tuple[torch.Tensor, ...]:
        """The parameters `pair_gates` reads, the input scale folded into the first weights: W (N C) = (N W) C costs
        nothing per element."""
        scale = num_keys if self.input_scale == "num_keys" else 1
        if self.hidden_size == 0:
            return self.weight * scale, self.bias
        return self.weight, self.bias, self.hidden_weight * scale, self.hidden_bias


class QueryGate(nn.Module):
    """Gates per query row from the query token: [g1, g2]_i = sigmoid(W x_i + b) (`gate_form="row"`).

    x_i is the layer's input token (the hidden state the queries are projected from), so the gate depends on the
    image and the position, yet reads no attention entry: the layer can use the fused path. Zero weights and
    biases (-b, +b) give g1 + g2 = 1 at step 0.
    """

    reads_attention = False

    def __init__(self, num_groups: int, hidden_size: int, init_bias: float = 0.0):
        super().__init__()
        self.num_groups = num_groups
        self.init_bias = init_bias
        self.weight = nn.Parameter(torch.empty(num_groups, 2, hidden_size))  # [groups, (g1, g2), hidden]
        self.bias = nn.Parameter(torch.empty(num_groups, 2))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.zeros_(self.weight)
        init.copy_(self.bias, torch.tensor([-self.init_bias, self.init_bias]).repeat(self.num_groups, 1))

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """g1, g2 as [batch, groups, queries, 1] from the tokens [batch, queries, hidden]."""
        # one GEMM for every group's pair: [b, n, groups * 2] -> [b, groups, n, 2]
        logits = nn.functional.linear(hidden_states, self.weight.flatten(0, 1), self.bias.flatten())
        gates = logits.unflatten(-1, (self.num_groups, 2)).transpose(1, 2).sigmoid()
        return gates[..., :1], gates[..., 1:]


class ScalarGate(nn.Module):
    """One learned pair of gates per head (or per layer), the same for every image and entry (`gate_form="scalar"`):
    [g1, g2] = sigmoid(b), starting at (-b0, +b0)."""

    reads_attention = False

    def __init__(self, num_groups: int, init_bias: float = 0.0):
        super().__init__()
        self.num_groups = num_groups
        self.init_bias = init_bias
        self.bias = nn.Parameter(torch.empty(num_groups, 2))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.copy_(self.bias, torch.tensor([-self.init_bias, self.init_bias]).repeat(self.num_groups, 1))

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """g1, g2 as [1, groups, 1, 1]."""
        gates = self.bias.sigmoid().to(hidden_states.dtype).view(1, self.num_groups, 1, 2)
        return gates[..., :1], gates[..., 1:]


class FixedMix(nn.Module):
    """No gated control network (the paper's Table 3 ablation "without gate"): C_F = (C_AGT + C_VFM) / 2."""

    reads_attention = False

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        half = hidden_states.new_full((1, 1, 1, 1), 0.5)
        return half, half


def build_gate(
    granularity: str, form: str, num_heads: int, hidden_size: int, init_bias: float, input_scale: str, embed_dim: int
) -> nn.Module:
    """The layer's mixer of C_AGT and C_VFM: per attention entry (`form="element"`, Eq. 5 as in the paper), per query
    row (`"row"`) or a constant (`"scalar"`), with one network per head or per layer (`granularity`); `FixedMix`
    for `granularity="none"`. `embed_dim` is the token width a row gate reads."""
    if granularity == "none":
        return FixedMix()
    groups = num_heads if granularity == "head" else 1
    if form == "row":
        return QueryGate(groups, embed_dim, init_bias)
    if form == "scalar":
        return ScalarGate(groups, init_bias)
    return GatedControlNetwork(groups, hidden_size, init_bias, input_scale)


# On CPU the elementwise passes (softmax, gate) are memory-bound: the materialised path works on batch chunks whose
# scores fit in the L2 cache (as the blockwise path's blocks do, `blockwise_attention.BLOCK_BYTES`).
CPU_CHUNK_BYTES = BLOCK_BYTES

# The `attn_implementation` of the Triton kernel (`triton_attention.py`) for the per-element gate: interaction layers
# run the kernel on CUDA tensors, every other attention layer of the model (and its mask) runs SDPA.
INTERACTION_KERNEL = "interaction_triton"
AttentionInterface.register(INTERACTION_KERNEL, sdpa_attention_forward)
AttentionMaskInterface.register(INTERACTION_KERNEL, sdpa_mask)


@dataclass(frozen=True)
class StudentMapRequest:
    """What a layer's student map reads (`student_map_from_attention`): the reduction over query rows (`"cls"` or
    `"mean"`), the prefix keys to drop, the map (`"interaction"`: C_AGT, `"original"`: C_VFM) and the real keys
    (`key_mask`, [batch, keys], DETR's padding)."""

    reduction: str
    num_prefix_tokens: int = 0
    source: str = "interaction"
    key_mask: torch.Tensor | None = None

    def row_weights(self, batch_size: int, num_queries: int, dtype: torch.dtype, device) -> torch.Tensor:
        """The weight of each query row in the map, [batch, rows], over the first rows only: one row for `"cls"`;
        1 / (real rows) on the real rows for `"mean"`."""
        if self.reduction == "cls":
            return torch.ones(batch_size, 1, dtype=dtype, device=device)
        if self.key_mask is None:
            return torch.full((batch_size, num_queries), 1 / num_queries, dtype=dtype, device=device)
        real = self.key_mask.to(dtype)
        return real / real.sum(-1, keepdim=True).clamp_min(1)

    def from_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """The student map from the weighted sum of the map's rows, [batch, heads, keys]."""
        return student_map_from_attention(rows[:, :, None], "cls", self.num_prefix_tokens, self.key_mask)


def interaction_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    interaction_query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    student_map: StudentMapRequest | None = None,
    return_attention_weights: bool = False,
    gate_states: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Eq. 3-8 for one layer, by the model's attention implementation (`module.config._attn_implementation`):

    - `"eager"` (and a standalone module, whose config has none): the attention maps materialised
      (`materialised_interaction_attention`); the only implementation that returns C_F (`output_attentions`);
    - `"sdpa"`: gates that read no attention entry (per row, per head, fixed) run fused SDPA
      (`fused_interaction_attention`); the per-element gate runs blockwise (`blockwise_interaction_attention`);
    - `INTERACTION_KERNEL`: as `"sdpa"`, with the Triton kernel for the per-element gate on CUDA.
    With attention dropout (training), the per-element gate runs materialised: the blocks have no dropout.

    Args:
        query, interaction_query: P_q and P'_q, [batch, heads, queries, head_dim].
        key, value: P_k (shared by both query sets) and P_v, [batch, heads, keys, head_dim].
        attention_mask: additive float mask or boolean keep-mask broadcastable to [batch, heads, queries, keys].
        student_map: if set, also return the student map it describes and the mean gates.
        return_attention_weights: also return C_F (eager only).
        gate_states: [batch, queries, hidden], the tokens a per-row gate reads (`QueryGate`).

    Returns:
        `(C_F @ P_v` as [batch, queries, heads, head_dim], C_F or None, student map or None, mean gates or None)`.
    """
    implementation = module.config._attn_implementation
    reads_attention = module.gate.reads_attention
    if implementation in (None, "eager") or (reads_attention and dropout > 0):
        return materialised_interaction_attention(
            module,
            query,
            interaction_query,
            key,
            value,
            attention_mask,
            scaling,
            dropout,
            student_map,
            return_attention_weights,
            gate_states,
        )
    if return_attention_weights:
        logger.warning_once(
            f"Interaction attention under attn_implementation={implementation!r} keeps no attention map, so "
            "`output_attentions=True` returns none for it: set attn_implementation='eager' to get C_F (and, with "
            "`output_interactions=True`, C_VFM and C_AGT)."
        )
    if not reads_attention:
        return fused_interaction_attention(
            query,
            interaction_query,
            key,
            value,
            attention_mask,
            scaling,
            dropout,
            module.gate(gate_states),
            student_map,
        )
    gate_params = module.gate.pair_gate_parameters(key.shape[2])
    attend = blockwise_interaction_attention
    if implementation == INTERACTION_KERNEL and kernel_applies(query, gate_params):
        attend = triton_interaction_attention
    row_weights = None
    if student_map is not None:
        row_weights = student_map.row_weights(query.shape[0], query.shape[2], query.dtype, query.device)
    output, rows, gate_means = attend(
        query,
        interaction_query,
        key,
        value,
        attention_mask,
        scaling,
        gate_params,
        row_weights,
        student_map.source if student_map is not None else "interaction",
        return_gate_means=student_map is not None,
    )
    student = student_map.from_rows(rows) if student_map is not None else None
    return output.transpose(1, 2).contiguous(), None, student, gate_means


def materialised_interaction_attention(
    module: nn.Module,
    query: torch.Tensor,
    interaction_query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    student_map: StudentMapRequest | None = None,
    return_attention_weights: bool = False,
    gate_states: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Eq. 3-8 with both attention maps and C_F materialised ([batch, heads, N, N]), on CPU a batch chunk at a time;
    arguments and returns as `interaction_attention_forward`. With `return_attention_weights`, C_VFM and C_AGT also go
    to `module.attention_maps` (`InteractionAttentionMaps`)."""
    query_gates = None if module.gate.reads_attention else module.gate(gate_states)
    batch_size, num_heads, num_queries = query.shape[:3]
    chunk = batch_size
    if query.device.type == "cpu":
        bytes_per_item = num_heads * 2 * num_queries * key.shape[2] * query.element_size()
        chunk = max(1, CPU_CHUNK_BYTES // bytes_per_item)
    outputs, fused_parts, student_maps, gate_means, attention_maps = [], [], [], [], []
    for start in range(0, batch_size, chunk):
        rows = slice(start, start + chunk)
        mask = attention_mask[rows] if attention_mask is not None and attention_mask.shape[0] > 1 else attention_mask
        gates = None if query_gates is None else tuple(g[rows] if g.shape[0] > 1 else g for g in query_gates)
        chunk_map = None
        if student_map is not None and student_map.key_mask is not None:
            chunk_map = dataclasses.replace(student_map, key_mask=student_map.key_mask[rows])
        output, fused, student, means, maps = _interaction_attention_block(
            module,
            query[rows],
            interaction_query[rows],
            key[rows],
            value[rows],
            mask,
            scaling,
            dropout,
            chunk_map or student_map,
            gates,
        )
        outputs.append(output)
        if return_attention_weights:  # otherwise let each chunk's maps go as soon as they are used
            fused_parts.append(fused)
            attention_maps.append(maps)
        if student is not None:
            student_maps.append(student)
            gate_means.append(means)
    if attention_maps:
        module.attention_maps(*(torch.cat(parts) for parts in zip(*attention_maps)))
    return (
        torch.cat(outputs),
        torch.cat(fused_parts) if fused_parts else None,
        torch.cat(student_maps) if student_maps else None,
        torch.cat(gate_means) if gate_means else None,
    )


def _interaction_attention_block(
    module, query, interaction_query, key, value, attention_mask, scaling, dropout, student_map, query_gates
):
    num_queries = query.shape[2]
    # one matmul for Eq. 3 and Eq. 4: the stacked queries [P_q; P'_q] against the shared keys
    stacked = torch.cat([query, interaction_query], dim=2) * scaling
    scores = torch.matmul(stacked, key.transpose(2, 3))
    if attention_mask is not None:
        scores = _apply_mask(scores, _stack_mask(attention_mask))
    probs = nn.functional.softmax(scores, dim=-1, dtype=_softmax_dtype(query)).to(query.dtype)
    vfm, agt = probs.split(num_queries, dim=2)  # C_VFM (Eq. 3), C_AGT (Eq. 4)
    student = None
    if student_map is not None:
        source = vfm if student_map.source == "original" else agt
        student = student_map_from_attention(
            source, student_map.reduction, student_map.num_prefix_tokens, student_map.key_mask
        )
    if query_gates is None:
        fused, gate_means = module.gate(agt, vfm, return_gate_means=student_map is not None)  # Eq. 5-6
    else:
        g1, g2 = query_gates
        fused = g1 * agt + g2 * vfm  # Eq. 6 with gates constant along each row
        gate_means = _mean_gates(g1, g2, agt.shape) if student_map is not None else None
    fused = nn.functional.dropout(fused, p=dropout, training=module.training)
    output = torch.matmul(fused, value).transpose(1, 2).contiguous()  # C_F @ P_v, projected by the caller (Eq. 8)
    return output, fused, student, gate_means, (vfm, agt)


def fused_interaction_attention(
    query: torch.Tensor,
    interaction_query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float,
    query_gates: tuple[torch.Tensor, torch.Tensor],
    student_map: StudentMapRequest | None = None,
) -> tuple[torch.Tensor, None, torch.Tensor | None, torch.Tensor | None]:
    """Eq. 3-8 without any N x N map, for gates constant along each query row:
    C_F @ P_v = g1 (C_AGT @ P_v) + g2 (C_VFM @ P_v), both products from one `scaled_dot_product_attention` over the
    stacked queries [P_q; P'_q] (flash / memory-efficient kernels on GPU, the fused kernel on CPU). The student map
    needs only the rows it reads (`student_map_rows`). Attention dropout applies to each map on its own."""
    num_queries = query.shape[2]
    stacked = torch.cat([query, interaction_query], dim=2)
    mask = _stack_mask(attention_mask) if attention_mask is not None else None
    both = nn.functional.scaled_dot_product_attention(
        stacked, key, value, attn_mask=mask, dropout_p=dropout, scale=scaling
    )
    vfm_out, agt_out = both.split(num_queries, dim=2)
    g1, g2 = query_gates
    output = (g1 * agt_out + g2 * vfm_out).transpose(1, 2).contiguous()
    student = gate_means = None
    if student_map is not None:
        source = query if student_map.source == "original" else interaction_query
        student = student_map_rows(
            source,
            key,
            attention_mask,
            scaling,
            student_map.reduction,
            student_map.num_prefix_tokens,
            student_map.key_mask,
        )
        gate_means = _mean_gates(g1, g2, (*query.shape[:3], key.shape[2]))
    return output, None, student, gate_means


def student_map_rows(
    query, key, attention_mask, scaling, reduction, num_prefix_tokens, key_mask, chunk_rows: int = 256
) -> torch.Tensor:
    """The student map from the attention rows it reads, never the whole map: the first row for `"cls"`, the mean of
    the rows (chunks of `chunk_rows` queries) for `"mean"`. Same result as `student_map_from_attention`."""
    if reduction == "cls":
        query, chunk_rows = query[:, :, :1], 1
    num_queries = query.shape[2]
    row_weights = key_mask[:, None, :, None].to(query.dtype) if key_mask is not None and reduction == "mean" else None
    total = 0
    for start in range(0, num_queries, chunk_rows):
        rows = slice(start, start + chunk_rows)
        scores = torch.matmul(query[:, :, rows] * scaling, key.transpose(2, 3))
        if attention_mask is not None:
            scores = _apply_mask(scores, attention_mask[:, :, rows] if attention_mask.shape[2] > 1 else attention_mask)
        probs = nn.functional.softmax(scores, dim=-1, dtype=_softmax_dtype(query)).to(query.dtype)
        if row_weights is not None:
            probs = probs * row_weights[:, :, rows]
        total = total + probs.sum(dim=2)
    count = row_weights.sum(dim=2).clamp_min(1) if row_weights is not None else num_queries
    rows_mean = (total / count)[:, :, None]  # [batch, heads, 1, keys]
    return student_map_from_attention(rows_mean, "cls", num_prefix_tokens, key_mask)


def _softmax_dtype(query: torch.Tensor) -> torch.dtype:
    """Softmax in at least float32 (half-precision inputs), in float64 for float64 inputs."""
    return torch.promote_types(query.dtype, torch.float32)


def _stack_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """The mask of the stacked queries [P_q; P'_q]: per-query masks repeated, broadcast ones kept."""
    return torch.cat([attention_mask, attention_mask], dim=2) if attention_mask.shape[2] > 1 else attention_mask


def _apply_mask(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if mask.dtype == torch.bool:
        return scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return scores + mask


def _mean_gates(g1: torch.Tensor, g2: torch.Tensor, shape) -> torch.Tensor:
    """Mean (g1, g2) per head, [batch, heads, 2], of gates broadcast to the attention `shape` [b, h, rows, keys]."""
    batch, heads = shape[:2]
    means = [g.expand(batch, heads, *g.shape[2:]).mean(dim=(2, 3)) for g in (g1, g2)]
    return torch.stack(means, dim=-1).detach()


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


class InteractionOutputs(nn.Module):
    """Where an interaction attention publishes its student map and mean gates: an identity whose output the I-models'
    `_can_record_outputs` record (`INTERACTION_RECORDERS`), as the library records attentions and hidden states. The
    layer calling the attention keeps the parent's `(output, weights)` contract."""

    def forward(self, student_map: torch.Tensor, gates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return student_map, gates


class InteractionAttentionMaps(nn.Module):
    """Where an interaction attention publishes C_VFM and C_AGT (Eq. 3-4), when it materialises them (eager
    attention, attentions asked for): an identity recorded as `original_attentions` and `interaction_attentions` (`INTERACTION_RECORDERS`),
    next to C_F in the parent's `attentions`."""

    def forward(self, original: torch.Tensor, interaction: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return original, interaction


# `_can_record_outputs` entries of every I-model: per interaction layer, the student map and the mean gates, and
# (with attentions) C_VFM and C_AGT.
INTERACTION_RECORDERS = {
    "interaction_maps": OutputRecorder(InteractionOutputs, index=0),
    "gates": OutputRecorder(InteractionOutputs, index=1),
    "original_attentions": OutputRecorder(InteractionAttentionMaps, index=0),
    "interaction_attentions": OutputRecorder(InteractionAttentionMaps, index=1),
}


def key_mask_from_attention_mask(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """[batch, keys] True for real keys, from a padding-only 4D mask (boolean keep-mask or additive float mask)."""
    if attention_mask is None or attention_mask.ndim != 4:
        return None
    row = attention_mask[:, 0, 0]
    return row if row.dtype == torch.bool else row == 0


class InteractionAttentionMixin:
    """Turns a library attention class into its interaction twin (put it first in the bases): the parent's q/k/v/output
    projections plus P'_q (`interaction_q_proj`, shaped like P_q) and the layer's gate, and a `forward` with the
    parent's signature and `(output, weights)` return, so the parent's layers, encoders, models and heads run unchanged.

    With `output_interactions=True` among the keyword arguments (they reach attention modules through every parent
    forward) the student map and mean gates go to `self.interactions`, where `capture_outputs` records them; with
    attentions asked for under eager attention, C_VFM and C_AGT go to `self.attention_maps`.
    Subclasses set `num_prefix_tokens` (keys left out of the student map: CLS, registers) and may set
    `uses_key_mask` (padding, read from the attention mask, left out of the student map: DETR).
    """

    num_prefix_tokens = 0
    uses_key_mask = False

    def __init__(self, config, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        query = self.q_proj
        self.interaction_q_proj = nn.Linear(query.in_features, query.out_features, bias=query.bias is not None)
        self.gate = build_gate(
            config.gate_granularity,
            config.gate_form,
            query.out_features // self.head_dim,
            config.gate_hidden_size,
            config.gate_init_bias,
            config.gate_input_scale,
            query.in_features,
        )
        self.interactions = InteractionOutputs()
        self.attention_maps = InteractionAttentionMaps()

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs):
        return self.interaction_attention(hidden_states, attention_mask, **kwargs)

    @property
    def student_map_reduction(self) -> str:
        return getattr(self.config, "interaction_map_reduction", "mean")

    def interaction_attention(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        query_key_input: torch.Tensor | None = None,
        scaling: float | None = None,
        dropout: float | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Eq. 3-8 on the parent's projections; `query_key_input` feeds P_q, P'_q and P_k (DETR adds position
        embeddings there, not to the values). Returns the projected output and C_F (None unless attentions are
        recorded)."""
        query_key_input = hidden_states if query_key_input is None else query_key_input
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        query_states = self.q_proj(query_key_input).view(hidden_shape).transpose(1, 2)
        interaction_query_states = self.interaction_q_proj(query_key_input).view(hidden_shape).transpose(1, 2)
        key_states = self.k_proj(query_key_input).view(hidden_shape).transpose(1, 2)
        value_states = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)

        student_map = None
        if kwargs.get("output_interactions"):
            student_map = StudentMapRequest(
                self.student_map_reduction,
                self.num_prefix_tokens,
                getattr(self.config, "student_map_source", "interaction"),
                key_mask_from_attention_mask(attention_mask) if self.uses_key_mask else None,
            )
        dropout = self.attention_dropout if dropout is None else dropout
        attn_output, fused, student_map, gate_means = interaction_attention_forward(
            self,
            query_states,
            interaction_query_states,
            key_states,
            value_states,
            attention_mask,
            scaling=self.scaling if scaling is None else scaling,
            dropout=dropout if self.training else 0.0,
            student_map=student_map,
            return_attention_weights=bool(kwargs.get("output_attentions", self.config.output_attentions)),
            gate_states=hidden_states,
        )
        if student_map is not None:
            self.interactions(student_map, gate_means)
        output_projection = self.o_proj if hasattr(self, "o_proj") else self.out_proj
        return output_projection(attn_output.reshape(*input_shape, -1)), fused


__all__ = [
    "INTERACTION_RECORDERS",
    "FixedMix",
    "InteractionAttentionMaps",
    "InteractionAttentionMixin",
    "INTERACTION_KERNEL",
    "InteractionOutputs",
    "GatedControlNetwork",
    "QueryGate",
    "ScalarGate",
    "StudentMapRequest",
    "build_gate",
    "fused_interaction_attention",
    "interaction_attention_forward",
    "key_mask_from_attention_mask",
    "materialised_interaction_attention",
    "student_map_from_attention",
    "student_map_rows",
]
