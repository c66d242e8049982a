"""Interaction attention with the per-element gate (Eq. 3-8), computed blockwise: no [batch, heads, N, N] tensor in
the forward or the backward, so memory grows with the block size and linearly in N.

The gate reads the normalised probabilities of both query sets, so FlashAttention's online softmax does not apply as
is, but two passes are exact. Per block of query rows (both P_q and P'_q, stacked):
  1. the row statistics (log-sum-exp) of both query sets over every key block;
  2. per key block, both probability blocks from those statistics (C_VFM, C_AGT), the gate, C_F's block and its product
     with the value block, accumulated; plus the student map's column sums and the gates' sums.
The backward recomputes the blocks from the saved statistics, as FlashAttention's backward does. The gate makes
dC_F/dC_AGT and dC_F/dC_VFM elementwise (`pair_gates_backward`); the softmax backward of each query set then needs the
row sums of dC * C, accumulated over the key blocks in a first pass (or directly, when one key block spans every key).
The Triton kernel (`triton_attention.py`) runs the same algorithm on CUDA; this module is its reference and the CPU path.

Imports only torch, so that it travels with the remote code of saved checkpoints.
"""

import torch

from .pair_gates import pair_gates, pair_gates_backward

# On CPU the elementwise passes (softmax, gate) are memory-bound: blocks whose [heads, 2 * rows, keys] scores fit in the
# L2 cache, instead of whole [batch, heads, 2N, N] tensors, measured 1.9x faster per layer (ViT-S, batch 8).
BLOCK_BYTES = 4 * 2**20


def block_sizes(
    batch_size: int, num_heads: int, num_queries: int, num_keys: int, element_size: int, block_bytes: int
) -> tuple[int, int]:
    """(batch items, query rows) per block, so that a block's scores [items, heads, 2 * rows, keys] fit in
    `block_bytes`: whole images while one fits, else row blocks of one image."""
    bytes_per_row = num_heads * 2 * num_keys * element_size
    rows = max(1, block_bytes // bytes_per_row)
    if rows >= num_queries:
        return min(batch_size, max(1, rows // num_queries)), num_queries
    return 1, rows


def _slices(total: int, size: int) -> list[slice]:
    return [slice(start, min(start + size, total)) for start in range(0, total, size)]


def _mask_block(mask: torch.Tensor | None, items: slice, rows: slice, cols: slice) -> torch.Tensor | None:
    """The mask entries of a block, shaped to broadcast over the stacked scores [items, heads, 2, rows, cols]."""
    if mask is None:
        return None
    mask = mask[items] if mask.shape[0] > 1 else mask
    mask = mask[:, :, rows] if mask.shape[2] > 1 else mask
    return mask[..., cols].unsqueeze(2)


def _scores(stacked: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The scores of the pre-scaled stacked queries [items, heads, 2, rows, d] against a key block [items, heads,
    cols, d], masked, in the softmax's precision (at least float32): [items, heads, 2, rows, cols]."""
    scores = torch.matmul(stacked, key.transpose(-1, -2).unsqueeze(2))
    if mask is not None:
        if mask.dtype == torch.bool:
            scores.masked_fill_(~mask, torch.finfo(scores.dtype).min)
        else:
            scores.add_(mask)
    return scores.to(torch.promote_types(stacked.dtype, torch.float32))


class _Problem:
    """The inputs of one call, cut into blocks: batch items x query rows (outer), key columns (inner)."""

    def __init__(self, query, interaction_query, key, value, mask, scaling, batch_block, query_block, key_block):
        self.query, self.interaction_query, self.key, self.value, self.mask = (
            query,
            interaction_query,
            key,
            value,
            mask,
        )
        self.scaling = scaling
        batch_size, _, num_queries, _ = query.shape
        self.outer = [
            (items, rows) for items in _slices(batch_size, batch_block) for rows in _slices(num_queries, query_block)
        ]
        self.inner = _slices(key.shape[2], key_block)

    def stacked(self, items: slice, rows: slice) -> torch.Tensor:
        """[P_q; P'_q] rows of the block, pre-scaled: [items, heads, 2, rows, d]."""
        return torch.stack([self.query[items, :, rows], self.interaction_query[items, :, rows]], 2) * self.scaling

    def scores(self, stacked, items, rows, cols) -> torch.Tensor:
        return _scores(stacked, self.key[items, :, cols], _mask_block(self.mask, items, rows, cols))

    def log_sum_exp(self, stacked, items, rows) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Pass 1: the row statistics [items, heads, 2, rows] of both query sets; also the scores when one key block
        spans every key (pass 2 then needs no second matmul)."""
        total = None
        for cols in self.inner:
            scores = self.scores(stacked, items, rows, cols)
            block = torch.logsumexp(scores, dim=-1)
            total = block if total is None else torch.logaddexp(total, block)
        return total, scores if len(self.inner) == 1 else None

    def probabilities(self, stacked, items, rows, cols, lse, scores=None) -> torch.Tensor:
        """C_VFM and C_AGT of a block from the row statistics, stacked: [items, heads, 2, rows, cols]."""
        scores = self.scores(stacked, items, rows, cols) if scores is None else scores
        return scores.sub_(lse.unsqueeze(-1)).exp_().to(self.query.dtype)


def _row_weights_block(row_weights: torch.Tensor | None, items: slice, rows: slice) -> torch.Tensor | None:
    """The student map's weights of a block's query rows ([items, 1, rows, 1]); None when the block has none (the
    weights cover a prefix of the rows: only the first for a CLS map)."""
    if row_weights is None or rows.start >= row_weights.shape[1]:
        return None
    rows = slice(rows.start, min(rows.stop, row_weights.shape[1]))
    return row_weights[items, rows][:, None, :, None]


def _forward(problem: _Problem, gate_params, row_weights, source, return_gate_means, keep_statistics=True):
    query, value = problem.query, problem.value
    batch_size, num_heads, num_queries, _ = query.shape
    num_keys = problem.key.shape[2]
    softmax_dtype = torch.promote_types(query.dtype, torch.float32)
    output = query.new_empty(batch_size, num_heads, num_queries, value.shape[-1])
    lse = query.new_empty(batch_size, num_heads, 2, num_queries, dtype=softmax_dtype)
    columns = query.new_zeros(batch_size, num_heads, num_keys) if row_weights is not None else None
    gate_sums = query.new_zeros(batch_size, num_heads, 2) if return_gate_means else None
    for items, rows in problem.outer:
        stacked = problem.stacked(items, rows)
        if keep_statistics or len(problem.inner) > 1:
            lse[items, :, :, rows], scores = problem.log_sum_exp(stacked, items, rows)
        else:  # inference over one key block: the fused softmax, no statistics to keep for a backward
            single = problem.scores(stacked, items, rows, problem.inner[0]).softmax(-1).to(query.dtype)
        weights = _row_weights_block(row_weights, items, rows)
        accumulated = 0
        for cols in problem.inner:
            if keep_statistics or len(problem.inner) > 1:
                probs = problem.probabilities(stacked, items, rows, cols, lse[items, :, :, rows], scores)
            else:
                probs = single
            vfm, agt = probs.unbind(2)
            g1, g2 = pair_gates(agt, vfm, gate_params)  # Eq. 5
            if gate_sums is not None:
                gate_sums[items] += torch.stack([g1.sum(dim=(2, 3)), g2.sum(dim=(2, 3))], -1)
            if weights is not None:
                columns[items, :, cols] += (probs[:, :, source, : weights.shape[2]] * weights).sum(2)
            fused = g1.mul_(agt).addcmul_(g2, vfm)  # C_F, Eq. 6
            accumulated = accumulated + torch.matmul(fused, value[items, :, cols])  # C_F @ P_v
        output[items, :, rows] = accumulated
    gate_means = gate_sums / (num_queries * num_keys) if gate_sums is not None else None
    return output, lse, columns, gate_means


def _backward(problem: _Problem, lse, gate_params, row_weights, source, grad_output, grad_columns, needs):
    query, key, value = problem.query, problem.key, problem.value
    accumulate = torch.promote_types(query.dtype, torch.float32)
    grad_stacked = torch.zeros(*query.shape[:2], 2, *query.shape[2:], dtype=accumulate) if needs[0] else None
    grad_key = torch.zeros(key.shape, dtype=accumulate) if needs[1] else None
    grad_value = torch.zeros(value.shape, dtype=accumulate) if needs[2] else None
    grad_params = [torch.zeros_like(p) for p in gate_params]
    single = len(problem.inner) == 1

    def block_gradients(stacked, items, rows, cols, block_lse, weights):
        """A block's probabilities, C_F and the gradients dC_VFM, dC_AGT (stacked) and of the gate parameters."""
        probs = problem.probabilities(stacked, items, rows, cols, block_lse)
        vfm, agt = probs.unbind(2)
        g1, g2 = pair_gates(agt, vfm, gate_params)
        grad_fused = torch.matmul(grad_output[items, :, rows], value[items, :, cols].transpose(-1, -2))
        grad_agt, grad_vfm, block_param_grads = pair_gates_backward(grad_fused, agt, vfm, gate_params, g1, g2)
        grad_probs = torch.stack([grad_vfm, grad_agt], 2)
        if weights is not None and grad_columns is not None:  # the student map's column sums read one of the maps
            grad_probs[:, :, source, : weights.shape[2]] += weights * grad_columns[items, :, None, cols]
        return probs, g1.mul_(agt).addcmul_(g2, vfm), grad_probs, block_param_grads

    for items, rows in problem.outer:
        stacked = problem.stacked(items, rows)
        block_lse = lse[items, :, :, rows]
        weights = _row_weights_block(row_weights, items, rows)
        if not single:  # pass 1: the row sums of dC * C of both maps, for the softmax backward
            row_sums = 0
            for cols in problem.inner:
                probs, _, grad_probs, _ = block_gradients(stacked, items, rows, cols, block_lse, weights)
                row_sums = row_sums + (grad_probs * probs).sum(-1)
        for cols in problem.inner:  # pass 2
            probs, fused, grad_probs, block_param_grads = block_gradients(
                stacked, items, rows, cols, block_lse, weights
            )
            for total, block in zip(grad_params, block_param_grads):
                total += block
            if single:
                row_sums = (grad_probs * probs).sum(-1)
            grad_scores = grad_probs.sub_(row_sums.unsqueeze(-1)).mul_(probs).flatten(2, 3)  # softmax backward
            if grad_stacked is not None:
                block = torch.matmul(grad_scores, key[items, :, cols]) * problem.scaling
                grad_stacked[items, :, :, rows] += block.unflatten(2, (2, -1))
            if grad_key is not None:
                grad_key[items, :, cols] += torch.matmul(grad_scores.transpose(-1, -2), stacked.flatten(2, 3))
            if grad_value is not None:
                grad_value[items, :, cols] += torch.matmul(fused.transpose(-1, -2), grad_output[items, :, rows])
    grad_query, grad_interaction_query = grad_stacked.unbind(2) if grad_stacked is not None else (None, None)
    cast = lambda grad, like: grad.to(like.dtype) if grad is not None else None  # noqa: E731
    return (
        cast(grad_query, query),
        cast(grad_interaction_query, query),
        cast(grad_key, key),
        cast(grad_value, value),
        grad_params,
    )


class BlockwiseInteractionAttention(torch.autograd.Function):
    """Autograd of the blockwise forward: saves the inputs and the row statistics (O(N)), recomputes the blocks."""

    @staticmethod
    def forward(
        ctx, query, interaction_query, key, value, mask, row_weights, scaling, source, return_gate_means, *rest
    ):
        blocks, gate_params = rest[:3], rest[3:]  # (batch items, query rows, keys) per block; the gate's parameters
        problem = _Problem(query, interaction_query, key, value, mask, scaling, *blocks)
        keep_statistics = any(ctx.needs_input_grad)
        output, lse, columns, gate_means = _forward(
            problem, gate_params, row_weights, source, return_gate_means, keep_statistics
        )
        ctx.save_for_backward(query, interaction_query, key, value, mask, row_weights, lse, *gate_params)
        ctx.scaling, ctx.source, ctx.blocks = scaling, source, blocks
        if gate_means is not None:
            ctx.mark_non_differentiable(gate_means)
        return output, columns, gate_means

    @staticmethod
    def backward(ctx, grad_output, grad_columns, _grad_gate_means):
        query, interaction_query, key, value, mask, row_weights, lse, *gate_params = ctx.saved_tensors
        problem = _Problem(query, interaction_query, key, value, mask, ctx.scaling, *ctx.blocks)
        needs = (
            ctx.needs_input_grad[0] or ctx.needs_input_grad[1],
            ctx.needs_input_grad[2],
            ctx.needs_input_grad[3],
        )
        grad_query, grad_interaction_query, grad_key, grad_value, grad_params = _backward(
            problem, lse, gate_params, row_weights, ctx.source, grad_output, grad_columns, needs
        )
        return (
            grad_query,
            grad_interaction_query,
            grad_key,
            grad_value,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            *grad_params,
        )


def blockwise_interaction_attention(
    query: torch.Tensor,
    interaction_query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    gate_params: tuple[torch.Tensor, ...],
    row_weights: torch.Tensor | None = None,
    student_map_source: str = "interaction",
    return_gate_means: bool = False,
    block_bytes: int = BLOCK_BYTES,
    query_block: int | None = None,
    key_block: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Eq. 3-8 with the per-element gate, blockwise, differentiable in every tensor input and gate parameter.

    Args:
        query, interaction_query: P_q and P'_q, [batch, heads, queries, head_dim].
        key, value: P_k (shared) and P_v, [batch, heads, keys, head_dim].
        attention_mask: additive float mask or boolean keep-mask broadcastable to [batch, heads, queries, keys].
        gate_params: the gate's parameters, input scale folded in (`GatedControlNetwork.pair_gate_parameters`).
        row_weights: [batch, rows], the weights of the first `rows` query rows in the student map's column sums
            (`[[1.0]]`-like for a CLS map, 1 / (real rows) for a mean); None: no student map.
        student_map_source: sum the columns of C_AGT (`"interaction"`) or of C_VFM (`"original"`).
        block_bytes, query_block, key_block: the block sizes (by default from `block_bytes`; one key block spans
            every key, which makes each pass single: the two-pass form runs when `key_block` is smaller).

    Returns:
        C_F @ P_v [batch, heads, queries, head_dim]; the column sums sum_i w_i C[i, j] [batch, heads, keys] (or
        None); the mean gates (g1, g2) over every entry, [batch, heads, 2] (or None).
    """
    batch_size, num_heads, num_queries, _ = query.shape
    num_keys = key.shape[2]
    batch_block, rows = block_sizes(batch_size, num_heads, num_queries, num_keys, query.element_size(), block_bytes)
    if query_block is not None:
        batch_block, rows = 1, query_block
    source = 0 if student_map_source == "original" else 1
    gate_params = tuple(p.to(query.dtype) for p in gate_params)  # the gates in the maps' precision
    return BlockwiseInteractionAttention.apply(
        query,
        interaction_query,
        key,
        value,
        attention_mask,
        row_weights,
        scaling,
        source,
        return_gate_means,
        batch_block,
        rows,
        key_block or num_keys,
        *gate_params,
    )


__all__ = ["BLOCK_BYTES", "BlockwiseInteractionAttention", "blockwise_interaction_attention", "block_sizes"]
