"""The per-element gate of Eq. 5-6 as pure functions of blocks of C_AGT and C_VFM: the gates and their hand-written
gradients, shared by the materialised path (`GatedControlNetwork`) and the blockwise path (`blockwise_attention.py`).

`params` is `(weight, bias)` for the linear gate `[g1, g2] = sigmoid(W [C_AGT, C_VFM] + b)` and
`(weight, bias, hidden_weight, hidden_bias)` for `sigmoid(W2 GELU(W1 [C_AGT, C_VFM] + b1) + b2)`, with one row per
gate group (a head, or one for the layer) and the input scale already folded into the first weights. Maps are
[batch, heads, rows, keys]; a group's parameters broadcast over its heads.

Imports only torch, so that it travels with the remote code of saved checkpoints.
"""

import math

import torch


def sum_to_groups(tensor: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Sum a [batch, heads, rows, keys] tensor down to one value per gate group ([num_groups])."""
    per_head = tensor.sum(dim=(0, 2, 3))
    return per_head if num_groups == per_head.shape[0] else per_head.sum().reshape(1)


def _per_head(column: torch.Tensor) -> torch.Tensor:
    """[groups] -> [groups, 1, 1]: broadcasts over [batch, heads, rows, keys] (one group broadcasts over all heads)."""
    return column.view(-1, 1, 1)


def _hidden_layer(agt, vfm, hidden_weight, hidden_bias, unit):
    """The pre-activation of hidden unit `unit`: W1[unit] [C_AGT, C_VFM] + b1[unit]."""
    return (
        (agt * _per_head(hidden_weight[:, unit, 0]))
        .addcmul_(vfm, _per_head(hidden_weight[:, unit, 1]))
        .add_(_per_head(hidden_bias[:, unit]))
    )


def pair_gates(agt: torch.Tensor, vfm: torch.Tensor, params: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """g1 (weighting C_AGT) and g2 (weighting C_VFM), each shaped like the maps (Eq. 5)."""
    weight, bias = params[:2]
    if len(params) == 2:
        # (out-of-place addcmul with a broadcast first operand is several times slower than mul + in-place ops)
        g1 = (agt * _per_head(weight[:, 0, 0])).addcmul_(vfm, _per_head(weight[:, 0, 1]))
        g2 = (agt * _per_head(weight[:, 1, 0])).addcmul_(vfm, _per_head(weight[:, 1, 1]))
    else:
        g1, g2 = torch.zeros_like(agt), torch.zeros_like(agt)
        for unit in range(params[2].shape[1]):
            hidden = torch.nn.functional.gelu(_hidden_layer(agt, vfm, *params[2:], unit))
            g1.addcmul_(hidden, _per_head(weight[:, 0, unit]))
            g2.addcmul_(hidden, _per_head(weight[:, 1, unit]))
    return g1.add_(_per_head(bias[:, 0])).sigmoid_(), g2.add_(_per_head(bias[:, 1])).sigmoid_()


def pair_gates_backward(
    grad_fused: torch.Tensor, agt: torch.Tensor, vfm: torch.Tensor, params: tuple, g1: torch.Tensor, g2: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Gradients of C_F = g1 * C_AGT + g2 * C_VFM (Eq. 6) with respect to C_AGT, C_VFM and each of `params`, given
    dC_F and the gates of the forward. Elementwise in the maps: a block needs nothing from outside itself."""
    weight = params[0]
    groups = weight.shape[0]
    # dz_k = dF * input_k * g_k * (1 - g_k): the sigmoid's derivative times what g_k multiplies
    dz1 = grad_fused * agt * g1 * (1 - g1)
    dz2 = grad_fused * vfm * g2 * (1 - g2)
    grad_agt, grad_vfm = grad_fused * g1, grad_fused * g2
    grad_bias = torch.stack([sum_to_groups(dz1, groups), sum_to_groups(dz2, groups)], -1)
    if len(params) == 2:
        grad_agt.addcmul_(dz1, _per_head(weight[:, 0, 0])).addcmul_(dz2, _per_head(weight[:, 1, 0]))
        grad_vfm.addcmul_(dz1, _per_head(weight[:, 0, 1])).addcmul_(dz2, _per_head(weight[:, 1, 1]))
        grad_weight = torch.stack(
            [
                torch.stack([sum_to_groups(dz1 * agt, groups), sum_to_groups(dz1 * vfm, groups)], -1),
                torch.stack([sum_to_groups(dz2 * agt, groups), sum_to_groups(dz2 * vfm, groups)], -1),
            ],
            dim=1,
        )
        return grad_agt, grad_vfm, [grad_weight, grad_bias]
    hidden_weight = params[2]
    grad_weight, grad_hidden_weight, grad_hidden_bias = [], [], []
    for unit in range(hidden_weight.shape[1]):
        pre = _hidden_layer(agt, vfm, *params[2:], unit)
        cdf = torch.special.ndtr(pre)
        hidden = pre * cdf  # exact GELU
        grad_weight.append(torch.stack([sum_to_groups(dz1 * hidden, groups), sum_to_groups(dz2 * hidden, groups)], -1))
        # d GELU(x) / dx = Phi(x) + x phi(x)
        slope = pre.square().mul_(-0.5).exp_().mul_(pre).div_(math.sqrt(2 * math.pi)).add_(cdf)
        grad_pre = (dz1 * _per_head(weight[:, 0, unit])).addcmul_(dz2, _per_head(weight[:, 1, unit])).mul_(slope)
        grad_agt.addcmul_(grad_pre, _per_head(hidden_weight[:, unit, 0]))
        grad_vfm.addcmul_(grad_pre, _per_head(hidden_weight[:, unit, 1]))
        grad_hidden_weight.append(
            torch.stack([sum_to_groups(grad_pre * agt, groups), sum_to_groups(grad_pre * vfm, groups)], -1)
        )
        grad_hidden_bias.append(sum_to_groups(grad_pre, groups))
    return (
        grad_agt,
        grad_vfm,
        [
            torch.stack(grad_weight, -1),
            grad_bias,
            torch.stack(grad_hidden_weight, 1),
            torch.stack(grad_hidden_bias, -1),
        ],
    )


__all__ = ["pair_gates", "pair_gates_backward", "sum_to_groups"]
