"""Plain, loop-free float64 reference implementations of the paper's equations, written from the text."""

import torch


def reference_gate(agt, vfm, gate, gate_states=None):
    """Eq. 5-6 with an explicit stacked pair, per group of heads; returns (C_F, g1, g2). Row and scalar gates
    (`QueryGate`, `ScalarGate`, `FixedMix`) read `gate_states` [b, n, hidden] or nothing; g is constant along keys."""
    heads = agt.shape[1]
    if not gate.reads_attention:
        if not hasattr(gate, "bias"):  # FixedMix
            g = torch.full((*agt.shape, 2), 0.5, dtype=torch.float64)
        elif hasattr(gate, "weight"):  # QueryGate: sigmoid(W x_i + b) per query row
            logits = torch.einsum("bnd,hgd->bhng", gate_states.double(), gate.weight.double().expand(heads, -1, -1))
            g = torch.sigmoid(logits + gate.bias.double().expand(heads, -1)[None, :, None])[:, :, :, None].expand(
                *agt.shape, 2
            )
        else:  # ScalarGate
            g = torch.sigmoid(gate.bias.double().expand(heads, -1))[None, :, None, None].expand(*agt.shape, 2)
        return g[..., 0] * agt + g[..., 1] * vfm, g[..., 0], g[..., 1]
    pair = torch.stack([agt, vfm], dim=-1)  # [b, h, i, j, 2]
    if gate.input_scale == "num_keys":  # uniform attention reads 1
        pair = pair * agt.shape[-1]
    weight = gate.weight.double().expand(heads, -1, -1)  # [h, 2, in]
    bias = gate.bias.double().expand(heads, -1)
    if gate.hidden_size > 0:
        hidden_weight = gate.hidden_weight.double().expand(heads, -1, -1)
        hidden_bias = gate.hidden_bias.double().expand(heads, -1)
        features = torch.nn.functional.gelu(
            torch.einsum("bhijp,hkp->bhijk", pair, hidden_weight) + hidden_bias[None, :, None, None]
        )
    else:
        features = pair
    g = torch.sigmoid(torch.einsum("bhijk,hgk->bhijg", features, weight) + bias[None, :, None, None])
    return g[..., 0] * agt + g[..., 1] * vfm, g[..., 0], g[..., 1]


def _project(attention, x, linear):
    """One projection of float64 tokens x [b, n, hidden] split into heads: [b, heads, n, head_dim]."""
    b, n, _ = x.shape
    out = torch.nn.functional.linear(x, linear.weight.double(), linear.bias.double())
    return out.view(b, n, attention.config.num_attention_heads, attention.head_dim).transpose(1, 2)


def _output(attention, weights, v):
    """Eq. 8: the attention-weighted values, merged over heads and projected by o_proj."""
    b, h, n, d = v.shape
    out = (weights @ v).transpose(1, 2).reshape(b, n, h * d)
    return torch.nn.functional.linear(out, attention.o_proj.weight.double(), attention.o_proj.bias.double())


def reference_interaction_attention(attention, hidden_states):
    """Eq. 3-8 for an `IViTAttention`, in float64: returns (output after o_proj, C_F, C_AGT, g1, g2)."""
    x = hidden_states.double()
    q, iq, k, v = (
        _project(attention, x, p)
        for p in (attention.q_proj, attention.interaction_q_proj, attention.k_proj, attention.v_proj)
    )
    d = attention.head_dim
    vfm = torch.softmax(q @ k.transpose(-1, -2) / d**0.5, dim=-1)  # Eq. 3
    agt = torch.softmax(iq @ k.transpose(-1, -2) / d**0.5, dim=-1)  # Eq. 4
    fused, g1, g2 = reference_gate(agt, vfm, attention.gate, hidden_states)  # Eq. 5-6
    return _output(attention, fused, v), fused, agt, g1, g2


def reference_plain_attention(attention, hidden_states):
    """Standard softmax attention of a `ViTAttention`, float64."""
    x = hidden_states.double()
    q, k, v = (_project(attention, x, p) for p in (attention.q_proj, attention.k_proj, attention.v_proj))
    return _output(attention, torch.softmax(q @ k.transpose(-1, -2) / attention.head_dim**0.5, dim=-1), v)


def reference_student_map(agt, reduction):
    """Heads averaged, CLS key dropped, renormalised; CLS row or mean of rows."""
    rows = agt[:, :, 0, :] if reduction == "cls" else agt.mean(dim=2)
    m = rows.mean(dim=1)[:, 1:]
    return m / m.sum(-1, keepdim=True)


def reference_detr_interaction_attention(attention, hidden_states, position_embeddings, key_mask):
    """Eq. 3-8 for an `IDetrSelfAttention` in float64, DETR style (position embeddings in queries and keys only,
    padded keys masked): returns (output after o_proj, student map = mean of C_AGT over real query rows, heads
    averaged, padded keys zeroed, renormalised)."""
    x, pos = hidden_states.double(), position_embeddings.double()
    heads = attention.config.encoder_attention_heads
    b, n, _ = x.shape

    def project(inputs, linear):
        out = torch.nn.functional.linear(inputs, linear.weight.double(), linear.bias.double())
        return out.view(b, n, heads, -1).transpose(1, 2)

    q, iq, k = (project(x + pos, p) for p in (attention.q_proj, attention.interaction_q_proj, attention.k_proj))
    v = project(x, attention.v_proj)
    keep = key_mask[:, None, None, :]
    scale = attention.head_dim**-0.5
    vfm = torch.softmax((q @ k.transpose(-1, -2) * scale).masked_fill(~keep, float("-inf")), dim=-1)  # Eq. 3
    agt = torch.softmax((iq @ k.transpose(-1, -2) * scale).masked_fill(~keep, float("-inf")), dim=-1)  # Eq. 4
    fused, _, _ = reference_gate(agt, vfm, attention.gate, hidden_states)  # Eq. 5-6
    out = (fused @ v).transpose(1, 2).reshape(b, n, -1)
    out = torch.nn.functional.linear(out, attention.o_proj.weight.double(), attention.o_proj.bias.double())
    rows = key_mask[:, None, :, None].double()
    student = ((agt * rows).sum(2) / rows.sum(2)).mean(1) * key_mask.double()
    return out, student / student.sum(-1, keepdim=True)
