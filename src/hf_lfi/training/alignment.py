"""The interaction alignment loss (paper Eq. 13-14) as a pure function: student maps vs teacher maps.

    L = L_task + lambda * sum_l w_l * D_KL(C_AGT^l || C_VLM)            (Eq. 13-14, default direction)

Student maps are the I-model's `interaction_maps` (one distribution over the patch grid per interaction layer);
teacher maps (C_VLM, e.g. LLaVA's 24 x 24 grid) are resampled to the student grid by area interpolation and
renormalised. A batch's teacher maps are one (batch, h, w) tensor, or a list of (h_i, w_i) maps when they come on
different grids (a Qwen-style teacher on images of different sizes): each is resampled on its own. Both maps are
smoothed with `epsilon` (mixed with the uniform distribution) before the logarithm, so a zero in either map gives a
finite loss: p_eps = (p + epsilon) / (1 + epsilon * K) over K patches.
"""

import math
from collections.abc import Sequence

import torch
from torch.nn import functional as F

DIRECTIONS = ("student_teacher", "teacher_student")
TeacherMaps = torch.Tensor | Sequence[torch.Tensor]


def batch_teacher_maps(maps: Sequence[torch.Tensor]) -> TeacherMaps:
    """A batch's teacher maps: stacked into one (batch, h, w) tensor when they share a grid, else kept as a list."""
    return torch.stack(list(maps)) if len({tuple(m.shape) for m in maps}) == 1 else list(maps)


def check_epsilon(epsilon: float, name: str = "epsilon") -> None:
    """The smoothing mass must lie in (0, 1): 0 leaves log(0) = -inf for every empty patch (the loss is inf, then NaN),
    and 1 or more makes both maps nearly uniform (the loss reads ~0 whatever the maps)."""
    if not 0 < epsilon < 1:  # also refuses NaN
        raise ValueError(
            f"{name} must be in (0, 1), got {epsilon}: it is the smoothing mass added to every patch before the "
            "logarithm (0 gives log(0) = -inf on empty patches, and an inf then NaN loss)."
        )


def _check_grid(grid) -> tuple[int, int]:
    if len(grid) != 2 or not all(isinstance(size, int) and size > 0 for size in grid):
        raise ValueError(f"grid must be two positive integers (rows, columns), got {grid!r}.")
    return tuple(grid)


def _check_teacher_shape(teacher_map: TeacherMaps) -> None:
    if not isinstance(teacher_map, torch.Tensor):  # a list of maps on their own grids
        for i, single in enumerate(teacher_map):
            if not isinstance(single, torch.Tensor) or single.ndim != 2:
                got = f"shape {tuple(single.shape)}" if isinstance(single, torch.Tensor) else type(single).__name__
                raise ValueError(
                    f"teacher_map[{i}] must be a (height, width) tensor (one map of the batch), got {got}."
                )
        return
    if teacher_map.ndim != 3:
        raise ValueError(
            f"teacher_map must be (batch, height, width), got shape {tuple(teacher_map.shape)} (a single map needs a "
            "batch dimension: teacher_map[None])."
        )


def _as_teacher_maps(teacher_map) -> TeacherMaps:
    """A list (or tuple) of tensors stays a list of maps on their own grids; anything else becomes one tensor."""
    if (
        isinstance(teacher_map, (list, tuple))
        and teacher_map
        and all(isinstance(m, torch.Tensor) for m in teacher_map)
    ):
        return list(teacher_map)
    return torch.as_tensor(teacher_map)


def _maps_device(teacher_map: TeacherMaps) -> torch.device:
    return teacher_map.device if isinstance(teacher_map, torch.Tensor) else teacher_map[0].device


def resample_teacher_map(teacher_map: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Area-resample teacher maps (batch, h, w) to `grid` and renormalise each to sum to 1.

    An all-zero map (no valid teacher signal) stays all zero; callers mask those rows out.
    """
    _check_teacher_shape(teacher_map)
    grid = _check_grid(grid)
    # float16 maps (as stored in interaction datasets) are resampled in float32; float64 stays float64
    dtype = torch.float64 if teacher_map.dtype == torch.float64 else torch.float32
    resampled = F.interpolate(teacher_map[:, None].to(dtype), size=grid, mode="area")[:, 0]
    total = resampled.sum(dim=(1, 2), keepdim=True)
    return torch.where(total > 0, resampled / total.clamp_min(torch.finfo(resampled.dtype).tiny), resampled)


def _teacher_maps_on_grid(teacher_map: TeacherMaps, grid: tuple[int, int]) -> torch.Tensor:
    """`resample_teacher_map` of a batch's teacher maps, a tensor or a list of maps on their own grids."""
    if isinstance(teacher_map, torch.Tensor):
        return resample_teacher_map(teacher_map, grid)
    return torch.cat([resample_teacher_map(m[None], grid) for m in teacher_map])


def place_teacher_maps(teacher_map: TeacherMaps, interaction_mask: torch.Tensor) -> torch.Tensor:
    """Teacher maps (batch, h, w) or a list of maps on their own grids, each covering its whole image, put on a padded
    student grid.

    `interaction_mask` (batch, gh, gw) is True on feature positions of real pixels (I-DETR's output; DETR pads at the
    bottom and right). Each map is area-resampled to its image's real rows x columns, renormalised, and zero-padded
    to (gh, gw), so padding gets no teacher mass.
    """
    _check_teacher_shape(teacher_map)
    if interaction_mask.ndim != 3 or interaction_mask.shape[0] != len(teacher_map):
        raise ValueError(
            f"interaction_mask must be (batch={len(teacher_map)}, height, width), got {tuple(interaction_mask.shape)}."
        )
    dtype = torch.float64 if teacher_map[0].dtype == torch.float64 else torch.float32
    placed = torch.zeros(interaction_mask.shape, dtype=dtype, device=_maps_device(teacher_map))
    for i, (image_map, mask) in enumerate(zip(teacher_map, interaction_mask)):
        rows, cols = int(mask.any(dim=1).sum()), int(mask.any(dim=0).sum())
        if rows and cols:
            placed[i, :rows, :cols] = resample_teacher_map(image_map[None], (rows, cols))[0]
    return placed


def _sum_tolerance(dtype: torch.dtype) -> float:
    """How far from 1 a student map may sum in its dtype (16-bit maps are renormalised with ~3 significant digits)."""
    return 5e-2 if torch.finfo(dtype).bits <= 16 else 1e-3


def _bad_sum_message(i: int, flat: torch.Tensor, error: torch.Tensor, tolerance: float) -> str:
    """Names the first map of `student_maps[i]` whose sum is off by more than `tolerance`."""
    row = int((error > tolerance).nonzero()[0])
    return (
        f"student_maps[{i}] must sum to 1 over each map (a distribution over patches); row {row} sums to "
        f"{float(flat[row].sum()):.4g}."
    )


def _check_student_list(student_maps) -> None:
    if isinstance(student_maps, torch.Tensor) or not isinstance(student_maps, Sequence):
        got = f"a tensor of shape {tuple(student_maps.shape)}" if isinstance(student_maps, torch.Tensor) else None
        raise ValueError(
            "student_maps must be a list of (batch, height, width) tensors, one per aligned layer (an I-model's "
            f"`interaction_maps`, returned with output_interactions=True); got {got or repr(student_maps)[:80]}."
        )
    if len(student_maps) == 0:
        raise ValueError("student_maps is empty: give one (batch, height, width) map per aligned layer.")


def _check_inputs(student_maps, teacher_map, valid, layer_weights) -> None:
    """Shapes first, then every value check in one device sync; each error names the argument."""
    _check_teacher_shape(teacher_map)
    batch = len(teacher_map)
    for i, student in enumerate(student_maps):
        if not isinstance(student, torch.Tensor) or not student.is_floating_point():
            kind = f"a {student.dtype} tensor" if isinstance(student, torch.Tensor) else type(student).__name__
            raise ValueError(f"student_maps[{i}] must be a floating-point torch.Tensor, got {kind}.")
        if student.ndim != 3 or student.shape[0] != batch:
            raise ValueError(
                f"student_maps[{i}] has shape {tuple(student.shape)}; expected (batch={batch}, height, width) as "
                "teacher_map."
            )
    if valid is not None and (valid.ndim != 1 or len(valid) != batch):
        raise ValueError(f"valid must be one flag per image, shape ({batch},), got shape {tuple(valid.shape)}.")
    if len(layer_weights) != len(student_maps):
        raise ValueError(
            f"Got {len(layer_weights)} layer_weights for {len(student_maps)} student_maps: give one weight per map."
        )
    weights = [float(w) for w in layer_weights]
    if not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) == 0:
        raise ValueError(
            f"layer_weights must be finite, non-negative and not all zero, got {list(layer_weights)} (a negative "
            "weight rewards moving away from the teacher; all zero gives a zero loss)."
        )

    checks = []  # (flag, message): every flag is read with one device sync, a message is built only on failure
    for i, student in enumerate(student_maps):
        flat = student.detach().flatten(1).float()
        error = (flat.sum(-1) - 1).abs()
        tolerance = _sum_tolerance(student.dtype)
        checks += [
            (torch.isfinite(flat).all(), lambda i=i: f"student_maps[{i}] has NaN or infinite values."),
            (
                (flat >= 0).all(),
                lambda i=i: f"student_maps[{i}] has negative values; a student map is a distribution over patches.",
            ),
            (
                error.max() <= tolerance,
                lambda i=i, flat=flat, error=error, tolerance=tolerance: _bad_sum_message(i, flat, error, tolerance),
            ),
        ]
    maps = [teacher_map] if isinstance(teacher_map, torch.Tensor) else teacher_map
    device = _maps_device(teacher_map)
    checks += [
        (
            torch.stack([torch.isfinite(m).all().to(device) for m in maps]).all(),
            lambda: "teacher_map has NaN or infinite values.",
        ),
        (
            torch.stack([(m >= 0).all().to(device) for m in maps]).all(),
            lambda: "teacher_map has negative values; C_VLM is a non-negative distribution (Eq. 11/12).",
        ),
    ]
    if valid is not None and valid.dtype != torch.bool:
        checks.append((((valid == 0) | (valid == 1)).all(), lambda: "valid must hold booleans (or 0 / 1)."))
    passed = torch.stack([flag.to(device) for flag, _ in checks]).tolist()
    for ok, (_, message) in zip(passed, checks):
        if not ok:
            raise ValueError(message())


def _kl(p: torch.Tensor, q: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Row-wise D_KL(p || q) of flattened distributions (batch, K), both smoothed with epsilon."""
    k = p.shape[-1]
    p = (p + epsilon) / (1 + epsilon * k)
    q = (q + epsilon) / (1 + epsilon * k)
    return (p * (p.log() - q.log())).sum(dim=-1)


def alignment_loss(
    student_maps: Sequence[torch.Tensor],
    teacher_map: TeacherMaps,
    valid: torch.Tensor | None = None,
    direction: str = "student_teacher",
    epsilon: float = 1e-6,
    layer_weights: Sequence[float] | None = None,
) -> torch.Tensor:
    """KL alignment between every student map and the teacher map (Eq. 14), averaged over valid images.

    Args:
        student_maps: per interaction layer, (batch, gh, gw) distributions (`output.interaction_maps`).
        teacher_map: (batch, th, tw) non-negative teacher maps on any grid (e.g. 24 x 24), or a list of maps on
            their own grids (`batch_teacher_maps`).
        valid: (batch,) bool; rows that are False (teacher failed, see `interaction_status`) and all-zero teacher
            maps are left out. No valid row gives a zero loss that still depends on the student maps.
        direction: `"student_teacher"` = D_KL(C_AGT || C_VLM), the paper's Eq. 14 (default);
            `"teacher_student"` = D_KL(C_VLM || C_AGT).
        epsilon: smoothing mass added to every patch of both maps before the logarithm, in (0, 1) and below
            1 / (patches of a student map).
        layer_weights: one finite, non-negative weight per student map, not all zero; default 1 / num_layers (the
            mean over layers).

    Every input is checked (shapes, finiteness, signs, student maps summing to 1): a `ValueError` names the argument.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}.")
    check_epsilon(epsilon)
    teacher_map = _as_teacher_maps(teacher_map)
    if valid is not None:
        valid = torch.as_tensor(valid, device=_maps_device(teacher_map))
    _check_student_list(student_maps)
    if layer_weights is None:
        layer_weights = [1.0 / len(student_maps)] * len(student_maps)
    _check_inputs(student_maps, teacher_map, valid, layer_weights)
    cells = max(student.shape[-2] * student.shape[-1] for student in student_maps)
    if epsilon * cells >= 1:
        raise ValueError(
            f"epsilon={epsilon} adds {epsilon * cells:.3g} of uniform mass over the {cells} patches of a student map, "
            "more than the map's own mass 1: the loss would measure the smoothing, not the maps. Use a smaller epsilon."
        )

    if isinstance(teacher_map, torch.Tensor):
        keep = teacher_map.flatten(1).sum(-1) > 0
    else:
        keep = torch.stack([m.sum() > 0 for m in teacher_map])
    if valid is not None:
        keep = keep & valid.to(device=keep.device, dtype=torch.bool)
    loss = sum(student.sum() * 0.0 for student in student_maps)  # keeps the graph when nothing is valid
    if not keep.any():
        return loss
    targets = {}  # layers share their grid: resample the teacher once per grid
    for weight, student in zip(layer_weights, student_maps):
        grid = tuple(student.shape[-2:])
        if grid not in targets:
            targets[grid] = _teacher_maps_on_grid(teacher_map, grid)[keep].flatten(1)
        s, t = student[keep].flatten(1), targets[grid].to(student.dtype)
        kl = _kl(s, t, epsilon) if direction == "student_teacher" else _kl(t, s, epsilon)
        loss = loss + weight * kl.mean()
    return loss


__all__ = [
    "DIRECTIONS",
    "alignment_loss",
    "batch_teacher_maps",
    "check_epsilon",
    "place_teacher_maps",
    "resample_teacher_map",
]
