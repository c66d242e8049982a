"""Interaction attention with the linear per-element gate (Eq. 3-8) as Triton kernels for CUDA, forward and backward:
the algorithm of `blockwise_attention.py` (its reference), with query and key blocks in on-chip memory.

- forward, one program per (query block, batch x head): pass 1 computes the log-sum-exp of both query sets' rows
  over the key blocks; pass 2 recomputes both probability blocks from it, the gates, C_F's block and C_F @ P_v, plus
  the gates' row sums and the student map's weighted column sums (atomic adds over query blocks);
- backward, rows kernel (one program per query block): pass 1 accumulates the row sums of dC * C of both maps (the
  softmax backward needs them, and the gate makes them differ from FlashAttention's rowsum(dO * O)), pass 2 the
  gradients of P_q and P'_q;
- backward, columns kernel (one program per key block): the gradients of P_k and P_v and the gate's parameters.
Memory is O(N): inputs, outputs and per-row statistics, never an N x N block in global memory.

`TRITON_INTERPRET=1` runs the kernels on CPU tensors through Triton's interpreter (tests). Imports triton only if it
is installed: without it the blockwise PyTorch path runs. The hidden-layer gate (`gate_hidden_size > 0`) and float64
run the blockwise path too (`kernel_applies`).
"""

import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # optional: without triton the blockwise PyTorch path runs
    triton = None

# Query and key block sizes on a GPU (FlashAttention-2's for head sizes up to 128).
BLOCK_M = 64
BLOCK_N = 64
KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
# Boolean masks fill masked scores with float32's lowest value, as the PyTorch paths do with their dtype's.
_MASKED_SCORE = torch.finfo(torch.float32).min


def triton_is_available() -> bool:
    """Whether triton is installed (it comes with CUDA builds of torch)."""
    return triton is not None


def kernel_applies(query: torch.Tensor, gate_params: tuple) -> bool:
    """Whether the kernel runs these inputs: triton installed, CUDA tensors (or Triton's interpreter,
    `TRITON_INTERPRET=1`), float16 / bfloat16 / float32, the linear gate. Otherwise the blockwise path runs."""
    on_device = query.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"
    return triton is not None and on_device and query.dtype in KERNEL_DTYPES and len(gate_params) == 2


if triton is not None:

    @triton.jit
    def _scores(q, iq, k, mask_base, offs_m, offs_n, N, M, s_mn, s_mm, MASK_KIND: tl.constexpr, PREC: tl.constexpr):
        """Masked scores of both (pre-scaled) query blocks against a key block; keys past the end get -inf."""
        kt = tl.trans(k)
        s_p = tl.dot(q, kt, input_precision=PREC)
        s_a = tl.dot(iq, kt, input_precision=PREC)
        inside = (offs_m[:, None] < N) & (offs_n[None, :] < M)
        if MASK_KIND == 1:  # boolean keep-mask
            keep = tl.load(mask_base + offs_m[:, None] * s_mn + offs_n[None, :] * s_mm, mask=inside, other=1)
            s_p = tl.where(keep != 0, s_p, -3.4028234663852886e38)
            s_a = tl.where(keep != 0, s_a, -3.4028234663852886e38)
        if MASK_KIND == 2:  # additive mask
            bias = tl.load(mask_base + offs_m[:, None] * s_mn + offs_n[None, :] * s_mm, mask=inside, other=0.0)
            s_p += bias.to(tl.float32)
            s_a += bias.to(tl.float32)
        s_p = tl.where(offs_n[None, :] < M, s_p, float("-inf"))
        s_a = tl.where(offs_n[None, :] < M, s_a, float("-inf"))
        return s_p, s_a

    @triton.jit
    def _gate_values(a, p, GATE, h):
        """g1, g2 = sigmoid(W [C_AGT, C_VFM] + b) with this head's W (input scale folded in) and b (Eq. 5)."""
        w00 = tl.load(GATE + h * 6 + 0)
        w01 = tl.load(GATE + h * 6 + 1)
        w10 = tl.load(GATE + h * 6 + 2)
        w11 = tl.load(GATE + h * 6 + 3)
        g1 = tl.sigmoid(w00 * a + w01 * p + tl.load(GATE + h * 6 + 4))
        g2 = tl.sigmoid(w10 * a + w11 * p + tl.load(GATE + h * 6 + 5))
        return g1, g2

    @triton.jit
    def _gate_gradients(df, a, p, g1, g2, GATE, h):
        """dC_AGT, dC_VFM from dC_F (elementwise), and dz1, dz2 (the gate logits' gradients)."""
        dz1 = df * a * g1 * (1 - g1)
        dz2 = df * p * g2 * (1 - g2)
        da = df * g1 + dz1 * tl.load(GATE + h * 6 + 0) + dz2 * tl.load(GATE + h * 6 + 2)
        dp = df * g2 + dz1 * tl.load(GATE + h * 6 + 1) + dz2 * tl.load(GATE + h * 6 + 3)
        return da, dp, dz1, dz2

    @triton.jit
    def _load_rows(PTR, bh, offs_m, offs_d, N, D, scale):
        rows = tl.load(
            PTR + (bh * N + offs_m[:, None]) * D + offs_d[None, :],
            mask=(offs_m[:, None] < N) & (offs_d[None, :] < D),
            other=0.0,
        )
        return (rows.to(tl.float32) * scale).to(PTR.dtype.element_ty)

    @triton.jit
    def _forward_kernel(
        Q, IQ, K, V, MASK, ROW_W, GATE, OUT, LSE, COLS, GSUM,
        H, N, M, D, NW, scale, s_mb, s_mh, s_mn, s_mm,
        MASK_KIND: tl.constexpr, STUDENT: tl.constexpr, PREC: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    ):  # fmt: skip
        start_m = tl.program_id(0) * BLOCK_M
        bh = tl.program_id(1)
        b, h = bh // H, bh % H
        offs_m = start_m + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, BLOCK_D)
        offs_b = tl.arange(0, BLOCK_N)
        q = _load_rows(Q, bh, offs_m, offs_d, N, D, scale)
        iq = _load_rows(IQ, bh, offs_m, offs_d, N, D, scale)
        mask_base = MASK + b * s_mb + h * s_mh

        # pass 1: the log-sum-exp of each row of both query sets
        max_p = tl.full([BLOCK_M], float("-inf"), tl.float32)
        max_a = tl.full([BLOCK_M], float("-inf"), tl.float32)
        sum_p = tl.zeros([BLOCK_M], tl.float32)
        sum_a = tl.zeros([BLOCK_M], tl.float32)
        for start_n in range(0, M, BLOCK_N):
            offs_n = start_n + offs_b
            k = _load_rows(K, bh, offs_n, offs_d, M, D, 1.0)
            s_p, s_a = _scores(q, iq, k, mask_base, offs_m, offs_n, N, M, s_mn, s_mm, MASK_KIND, PREC)
            new_p = tl.maximum(max_p, tl.max(s_p, 1))
            new_a = tl.maximum(max_a, tl.max(s_a, 1))
            safe_p = tl.where(new_p == float("-inf"), 0.0, new_p)  # rows masked so far: nothing to rescale
            safe_a = tl.where(new_a == float("-inf"), 0.0, new_a)
            sum_p = sum_p * tl.exp(max_p - safe_p) + tl.sum(tl.exp(s_p - safe_p[:, None]), 1)
            sum_a = sum_a * tl.exp(max_a - safe_a) + tl.sum(tl.exp(s_a - safe_a[:, None]), 1)
            max_p, max_a = new_p, new_a
        lse_p = max_p + tl.log(sum_p)
        lse_a = max_a + tl.log(sum_a)
        row_ok = offs_m < N
        tl.store(LSE + (bh * 2 + 0) * N + offs_m, lse_p, mask=row_ok)
        tl.store(LSE + (bh * 2 + 1) * N + offs_m, lse_a, mask=row_ok)

        # pass 2: probabilities, gates, C_F @ P_v; gate row sums; the student map's column sums
        weights = tl.load(ROW_W + b * NW + offs_m, mask=offs_m < NW, other=0.0)
        acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
        gate1 = tl.zeros([BLOCK_M], tl.float32)
        gate2 = tl.zeros([BLOCK_M], tl.float32)
        for start_n in range(0, M, BLOCK_N):
            offs_n = start_n + offs_b
            k = _load_rows(K, bh, offs_n, offs_d, M, D, 1.0)
            v = _load_rows(V, bh, offs_n, offs_d, M, D, 1.0)
            s_p, s_a = _scores(q, iq, k, mask_base, offs_m, offs_n, N, M, s_mn, s_mm, MASK_KIND, PREC)
            p = tl.exp(s_p - lse_p[:, None])  # C_VFM (Eq. 3)
            a = tl.exp(s_a - lse_a[:, None])  # C_AGT (Eq. 4)
            g1, g2 = _gate_values(a, p, GATE, h)
            col_ok = offs_n < M
            gate1 += tl.sum(tl.where(col_ok[None, :], g1, 0.0), 1)
            gate2 += tl.sum(tl.where(col_ok[None, :], g2, 0.0), 1)
            fused = g1 * a + g2 * p  # C_F (Eq. 6)
            acc += tl.dot(fused.to(V.dtype.element_ty), v, input_precision=PREC)
            if STUDENT != 0:
                if start_m < NW:  # blocks past the weighted rows (all but the first for a CLS map) add nothing
                    if STUDENT == 1:
                        column_sums = tl.sum(a * weights[:, None], 0)
                    else:
                        column_sums = tl.sum(p * weights[:, None], 0)
                    tl.atomic_add(COLS + bh * M + offs_n, column_sums, mask=col_ok)
        out_ptrs = OUT + (bh * N + offs_m[:, None]) * D + offs_d[None, :]
        tl.store(out_ptrs, acc.to(OUT.dtype.element_ty), mask=row_ok[:, None] & (offs_d[None, :] < D))
        tl.store(GSUM + (bh * 2 + 0) * N + offs_m, gate1, mask=row_ok)
        tl.store(GSUM + (bh * 2 + 1) * N + offs_m, gate2, mask=row_ok)

    @triton.jit
    def _probability_gradients(
        q, iq, k, v, do, lse_p, lse_a, weights, DCOLS, GATE, mask_base, bh, h, offs_m, offs_n, N, M, s_mn, s_mm,
        MASK_KIND: tl.constexpr, STUDENT: tl.constexpr, PREC: tl.constexpr,
    ):  # fmt: skip
        """A block's C_VFM, C_AGT, gates and the gradients dC_VFM, dC_AGT (gate and student map), dz1, dz2."""
        s_p, s_a = _scores(q, iq, k, mask_base, offs_m, offs_n, N, M, s_mn, s_mm, MASK_KIND, PREC)
        p = tl.exp(s_p - lse_p[:, None])
        a = tl.exp(s_a - lse_a[:, None])
        g1, g2 = _gate_values(a, p, GATE, h)
        df = tl.dot(do, tl.trans(v), input_precision=PREC)
        da, dp, dz1, dz2 = _gate_gradients(df, a, p, g1, g2, GATE, h)
        if STUDENT != 0:
            grad_cols = tl.load(DCOLS + bh * M + offs_n, mask=offs_n < M, other=0.0)
            if STUDENT == 1:
                da += weights[:, None] * grad_cols[None, :]
            else:
                dp += weights[:, None] * grad_cols[None, :]
        return p, a, g1, g2, da, dp, dz1, dz2

    @triton.jit
    def _backward_rows_kernel(
        Q, IQ, K, V, MASK, ROW_W, GATE, LSE, DOUT, DCOLS, DELTA, DQ, DIQ,
        H, N, M, D, NW, scale, s_mb, s_mh, s_mn, s_mm,
        MASK_KIND: tl.constexpr, STUDENT: tl.constexpr, PREC: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    ):  # fmt: skip
        start_m = tl.program_id(0) * BLOCK_M
        bh = tl.program_id(1)
        b, h = bh // H, bh % H
        offs_m = start_m + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, BLOCK_D)
        offs_b = tl.arange(0, BLOCK_N)
        row_ok = offs_m < N
        q = _load_rows(Q, bh, offs_m, offs_d, N, D, scale)
        iq = _load_rows(IQ, bh, offs_m, offs_d, N, D, scale)
        do = _load_rows(DOUT, bh, offs_m, offs_d, N, D, 1.0)
        lse_p = tl.load(LSE + (bh * 2 + 0) * N + offs_m, mask=row_ok, other=0.0)
        lse_a = tl.load(LSE + (bh * 2 + 1) * N + offs_m, mask=row_ok, other=0.0)
        weights = tl.load(ROW_W + b * NW + offs_m, mask=offs_m < NW, other=0.0)
        mask_base = MASK + b * s_mb + h * s_mh

        # pass 1: the row sums of dC * C of both maps (the softmax backward of each query set)
        delta_p = tl.zeros([BLOCK_M], tl.float32)
        delta_a = tl.zeros([BLOCK_M], tl.float32)
        for start_n in range(0, M, BLOCK_N):
            offs_n = start_n + offs_b
            k = _load_rows(K, bh, offs_n, offs_d, M, D, 1.0)
            v = _load_rows(V, bh, offs_n, offs_d, M, D, 1.0)
            p, a, g1, g2, da, dp, dz1, dz2 = _probability_gradients(
                q, iq, k, v, do, lse_p, lse_a, weights, DCOLS, GATE, mask_base, bh, h, offs_m, offs_n, N, M,
                s_mn, s_mm, MASK_KIND, STUDENT, PREC,
            )  # fmt: skip
            delta_p += tl.sum(dp * p, 1)
            delta_a += tl.sum(da * a, 1)
        tl.store(DELTA + (bh * 2 + 0) * N + offs_m, delta_p, mask=row_ok)
        tl.store(DELTA + (bh * 2 + 1) * N + offs_m, delta_a, mask=row_ok)

        # pass 2: dP_q, dP'_q
        dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
        diq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
        for start_n in range(0, M, BLOCK_N):
            offs_n = start_n + offs_b
            k = _load_rows(K, bh, offs_n, offs_d, M, D, 1.0)
            v = _load_rows(V, bh, offs_n, offs_d, M, D, 1.0)
            p, a, g1, g2, da, dp, dz1, dz2 = _probability_gradients(
                q, iq, k, v, do, lse_p, lse_a, weights, DCOLS, GATE, mask_base, bh, h, offs_m, offs_n, N, M,
                s_mn, s_mm, MASK_KIND, STUDENT, PREC,
            )  # fmt: skip
            ds_p = p * (dp - delta_p[:, None])
            ds_a = a * (da - delta_a[:, None])
            dq += tl.dot(ds_p.to(K.dtype.element_ty), k, input_precision=PREC)
            diq += tl.dot(ds_a.to(K.dtype.element_ty), k, input_precision=PREC)
        ptrs = (bh * N + offs_m[:, None]) * D + offs_d[None, :]
        inside = row_ok[:, None] & (offs_d[None, :] < D)
        tl.store(DQ + ptrs, dq * scale, mask=inside)
        tl.store(DIQ + ptrs, diq * scale, mask=inside)

    @triton.jit
    def _backward_columns_kernel(
        Q, IQ, K, V, MASK, ROW_W, GATE, LSE, DOUT, DCOLS, DELTA, DK, DV, DGATE,
        H, N, M, D, NW, scale, s_mb, s_mh, s_mn, s_mm,
        MASK_KIND: tl.constexpr, STUDENT: tl.constexpr, PREC: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    ):  # fmt: skip
        start_n = tl.program_id(0) * BLOCK_N
        bh = tl.program_id(1)
        b, h = bh // H, bh % H
        offs_n = start_n + tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, BLOCK_D)
        offs_r = tl.arange(0, BLOCK_M)
        k = _load_rows(K, bh, offs_n, offs_d, M, D, 1.0)
        v = _load_rows(V, bh, offs_n, offs_d, M, D, 1.0)
        mask_base = MASK + b * s_mb + h * s_mh
        dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
        dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
        # the gate's gradients: d w00, d w01, d w10, d w11, d b0, d b1 (padded rows and keys contribute 0: dC_F = 0)
        dw00 = tl.zeros([BLOCK_N], tl.float32)
        dw01 = tl.zeros([BLOCK_N], tl.float32)
        dw10 = tl.zeros([BLOCK_N], tl.float32)
        dw11 = tl.zeros([BLOCK_N], tl.float32)
        db0 = tl.zeros([BLOCK_N], tl.float32)
        db1 = tl.zeros([BLOCK_N], tl.float32)
        for start_m in range(0, N, BLOCK_M):
            offs_m = start_m + offs_r
            row_ok = offs_m < N
            q = _load_rows(Q, bh, offs_m, offs_d, N, D, scale)
            iq = _load_rows(IQ, bh, offs_m, offs_d, N, D, scale)
            do = _load_rows(DOUT, bh, offs_m, offs_d, N, D, 1.0)
            lse_p = tl.load(LSE + (bh * 2 + 0) * N + offs_m, mask=row_ok, other=0.0)
            lse_a = tl.load(LSE + (bh * 2 + 1) * N + offs_m, mask=row_ok, other=0.0)
            delta_p = tl.load(DELTA + (bh * 2 + 0) * N + offs_m, mask=row_ok, other=0.0)
            delta_a = tl.load(DELTA + (bh * 2 + 1) * N + offs_m, mask=row_ok, other=0.0)
            weights = tl.load(ROW_W + b * NW + offs_m, mask=offs_m < NW, other=0.0)
            p, a, g1, g2, da, dp, dz1, dz2 = _probability_gradients(
                q, iq, k, v, do, lse_p, lse_a, weights, DCOLS, GATE, mask_base, bh, h, offs_m, offs_n, N, M,
                s_mn, s_mm, MASK_KIND, STUDENT, PREC,
            )  # fmt: skip
            ds_p = (p * (dp - delta_p[:, None])).to(Q.dtype.element_ty)
            ds_a = (a * (da - delta_a[:, None])).to(Q.dtype.element_ty)
            dk += tl.dot(tl.trans(ds_p), q, input_precision=PREC)
            dk += tl.dot(tl.trans(ds_a), iq, input_precision=PREC)
            fused = (g1 * a + g2 * p).to(DOUT.dtype.element_ty)
            dv += tl.dot(tl.trans(fused), do, input_precision=PREC)
            dw00 += tl.sum(dz1 * a, 0)
            dw01 += tl.sum(dz1 * p, 0)
            dw10 += tl.sum(dz2 * a, 0)
            dw11 += tl.sum(dz2 * p, 0)
            db0 += tl.sum(dz1, 0)
            db1 += tl.sum(dz2, 0)
        ptrs = (bh * M + offs_n[:, None]) * D + offs_d[None, :]
        inside = (offs_n[:, None] < M) & (offs_d[None, :] < D)
        tl.store(DK + ptrs, dk, mask=inside)
        tl.store(DV + ptrs, dv, mask=inside)
        gate_ptr = DGATE + (bh * tl.num_programs(0) + tl.program_id(0)) * 6
        tl.store(gate_ptr + 0, tl.sum(dw00, 0))
        tl.store(gate_ptr + 1, tl.sum(dw01, 0))
        tl.store(gate_ptr + 2, tl.sum(dw10, 0))
        tl.store(gate_ptr + 3, tl.sum(dw11, 0))
        tl.store(gate_ptr + 4, tl.sum(db0, 0))
        tl.store(gate_ptr + 5, tl.sum(db1, 0))


def _mask_arguments(mask: torch.Tensor | None, shape: tuple[int, int, int, int], like: torch.Tensor):
    """(mask kind, tensor, strides over [batch, heads, queries, keys]); broadcast dimensions get stride 0."""
    if mask is None:
        return 0, like, (0, 0, 0, 0)
    mask = mask.expand(shape)
    kind = 1 if mask.dtype == torch.bool else 2
    return kind, mask.view(torch.uint8) if kind == 1 else mask, mask.stride()


class TritonInteractionAttention(torch.autograd.Function):
    """Autograd of the kernels: saves the inputs and the row statistics (O(N)); the backward kernels recompute."""

    @staticmethod
    def forward(ctx, query, interaction_query, key, value, mask, row_weights, options, weight, bias):
        scaling, source, return_gate_means, blocks = options
        query, interaction_query, key, value = (t.contiguous() for t in (query, interaction_query, key, value))
        batch_size, num_heads, num_queries, head_dim = query.shape
        num_keys = key.shape[2]
        gate = torch.cat([weight.flatten(1), bias], 1).float().expand(num_heads, 6).contiguous()
        mask_kind, mask_tensor, mask_strides = _mask_arguments(
            mask, (batch_size, num_heads, num_queries, num_keys), query
        )
        student = 0 if row_weights is None else 1 + (source == 0)
        weights = row_weights.float().contiguous() if row_weights is not None else query.new_zeros(batch_size, 1)
        output = torch.empty_like(query)
        lse = query.new_empty(batch_size, num_heads, 2, num_queries, dtype=torch.float32)
        columns = query.new_zeros(batch_size, num_heads, num_keys, dtype=torch.float32)
        gate_sums = query.new_empty(batch_size, num_heads, 2, num_queries, dtype=torch.float32)
        block_m, block_n = blocks
        grid = (triton.cdiv(num_queries, block_m), batch_size * num_heads)
        _forward_kernel[grid](
            query, interaction_query, key, value, mask_tensor, weights, gate, output, lse, columns, gate_sums,
            num_heads, num_queries, num_keys, head_dim, weights.shape[1], scaling, *mask_strides,
            MASK_KIND=mask_kind, STUDENT=student, PREC=_precision(query), BLOCK_M=block_m, BLOCK_N=block_n,
            BLOCK_D=_head_block(head_dim),
        )  # fmt: skip
        ctx.save_for_backward(query, interaction_query, key, value, mask, weights, gate, lse)
        ctx.options, ctx.student, ctx.gate_shapes = options, student, (weight.shape, bias.shape, weight.dtype)
        gate_means = None
        if return_gate_means:
            gate_means = (gate_sums.sum(-1) / (num_queries * num_keys)).to(query.dtype)
            ctx.mark_non_differentiable(gate_means)
        return output, columns.to(query.dtype) if student else None, gate_means

    @staticmethod
    def backward(ctx, grad_output, grad_columns, _grad_gate_means):
        query, interaction_query, key, value, mask, weights, gate, lse = ctx.saved_tensors
        scaling, _, _, (block_m, block_n) = ctx.options
        batch_size, num_heads, num_queries, head_dim = query.shape
        num_keys = key.shape[2]
        student = ctx.student if grad_columns is not None else 0
        grad_columns = grad_columns.float().contiguous() if student else weights
        mask_kind, mask_tensor, mask_strides = _mask_arguments(
            mask, (batch_size, num_heads, num_queries, num_keys), query
        )
        grad_output = grad_output.contiguous()
        delta = torch.empty_like(lse)
        grad_query, grad_interaction_query = (torch.empty_like(query, dtype=torch.float32) for _ in range(2))
        grad_key, grad_value = (torch.empty_like(key, dtype=torch.float32) for _ in range(2))
        key_blocks = triton.cdiv(num_keys, block_n)
        grad_gate = query.new_empty(batch_size * num_heads, key_blocks, 6, dtype=torch.float32)
        common = (
            num_heads, num_queries, num_keys, head_dim, weights.shape[1], scaling, *mask_strides,
        )  # fmt: skip
        constants = dict(
            MASK_KIND=mask_kind, STUDENT=student, PREC=_precision(query), BLOCK_M=block_m, BLOCK_N=block_n,
            BLOCK_D=_head_block(head_dim),
        )  # fmt: skip
        inputs = (query, interaction_query, key, value, mask_tensor, weights, gate, lse, grad_output, grad_columns)
        _backward_rows_kernel[(triton.cdiv(num_queries, block_m), batch_size * num_heads)](
            *inputs, delta, grad_query, grad_interaction_query, *common, **constants
        )
        _backward_columns_kernel[(key_blocks, batch_size * num_heads)](
            *inputs, delta, grad_key, grad_value, grad_gate, *common, **constants
        )
        per_head = grad_gate.view(batch_size, num_heads, key_blocks, 6).sum(dim=(0, 2))
        weight_shape, bias_shape, gate_dtype = ctx.gate_shapes
        if weight_shape[0] == 1:  # one gate for the layer: every head's contribution
            per_head = per_head.sum(0, keepdim=True)
        grad_weight = per_head[:, :4].reshape(weight_shape).to(gate_dtype)
        grad_bias = per_head[:, 4:].reshape(bias_shape).to(gate_dtype)
        return (
            grad_query.to(query.dtype),
            grad_interaction_query.to(query.dtype),
            grad_key.to(key.dtype),
            grad_value.to(value.dtype),
            None,
            None,
            None,
            grad_weight,
            grad_bias,
        )


def _precision(query: torch.Tensor) -> str:
    """float32 inputs keep full-precision products (as the PyTorch paths); half inputs use the tensor cores."""
    return "ieee" if query.dtype == torch.float32 else "tf32"


def _head_block(head_dim: int) -> int:
    return max(16, triton.next_power_of_2(head_dim))


def triton_interaction_attention(
    query: torch.Tensor,
    interaction_query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    gate_params: tuple[torch.Tensor, torch.Tensor],
    row_weights: torch.Tensor | None = None,
    student_map_source: str = "interaction",
    return_gate_means: bool = False,
    block_m: int = BLOCK_M,
    block_n: int = BLOCK_N,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """`blockwise_interaction_attention` (same arguments and returns) on the Triton kernels, for the linear gate
    (`kernel_applies`); `block_m`, `block_n` are the query and key block sizes (at least 16)."""
    if triton is None:
        raise ImportError("The interaction attention kernel needs triton (`pip install triton`; CUDA torch has it).")
    options = (scaling, 0 if student_map_source == "original" else 1, return_gate_means, (block_m, block_n))
    return TritonInteractionAttention.apply(
        query, interaction_query, key, value, attention_mask, row_weights, options, *gate_params
    )


__all__ = ["BLOCK_M", "BLOCK_N", "kernel_applies", "triton_interaction_attention", "triton_is_available"]
