"""The interaction alignment loss (paper Eq. 13-14) as a pure function: student maps vs teacher maps.

    L = L_task + lambda * sum_l w_l * D_KL(C_AGT^l || C_VLM)            (Eq. 13-14, default direction)

Student maps are the I-model's `interaction_maps` (one distribution over the patch grid per interaction layer);
teacher maps (C_VLM, e.g. LLaVA's 24 x 24 grid) are resampled to the student grid by area interpolation and
renormalised. A batch's teacher maps are one (batch, h, w) tensor, or a list of (h_i, w_i) maps when they come on
different grids (a Qwen-style teacher on images of different sizes): each is resampled on its own. Both maps are
smoothed with `epsilon` (mixed with the uniform distribution) before the logarithm, so a zero in either map gives a
finite loss: p_eps = (p + epsilon) / (1 + epsilon * K) over K patches.
"""

from collections.abc import Sequence

import torch
from torch.nn import functional as F

DIRECTIONS = ("student_teacher", "teacher_student")
TeacherMaps = torch.Tensor | Sequence[torch.Tensor]


def batch_teacher_maps(maps: Sequence[torch.Tensor]) -> TeacherMaps:
    """A batch's teacher maps: stacked into one (batch, h, w) tensor when they share a grid, else kept as a list."""
    return torch.stack(list(maps)) if len({tuple(m.shape) for m in maps}) == 1 else list(maps)


def resample_teacher_map(teacher_map: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Area-resample teacher maps (batch, h, w) to `grid` and renormalise each to sum to 1.

    An all-zero map (no valid teacher signal) stays all zero; callers mask those rows out.
    """
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
    if interaction_mask.ndim != 3 or interaction_mask.shape[0] != len(teacher_map):
        raise ValueError(
            f"interaction_mask must be (batch={len(teacher_map)}, height, width), got {tuple(interaction_mask.shape)}."
        )
    dtype = torch.float64 if teacher_map[0].dtype == torch.float64 else torch.float32
    placed = torch.zeros(interaction_mask.shape, dtype=dtype, device=teacher_map[0].device)
    for i, (image_map, mask) in enumerate(zip(teacher_map, interaction_mask)):
        rows, cols = int(mask.any(dim=1).sum()), int(mask.any(dim=0).sum())
        if rows and cols:
            placed[i, :rows, :cols] = resample_teacher_map(image_map[None], (rows, cols))[0]
    return placed


def _check_maps(student_maps: Sequence[torch.Tensor], teacher_map: TeacherMaps) -> None:
    if len(student_maps) == 0:
        raise ValueError(
            "No student maps: the model returned no interaction_maps (call it with output_interactions=True)."
        )
    if isinstance(teacher_map, torch.Tensor) and teacher_map.ndim != 3:
        raise ValueError(
            f"The teacher interaction map must be (batch, height, width), got shape {tuple(teacher_map.shape)}."
        )
    for i, single in enumerate(teacher_map if not isinstance(teacher_map, torch.Tensor) else ()):
        if single.ndim != 2:
            raise ValueError(f"Teacher map {i} of the batch must be (height, width), got shape {tuple(single.shape)}.")
    for i, student in enumerate(student_maps):
        if student.ndim != 3 or student.shape[0] != len(teacher_map):
            raise ValueError(
                f"Student map {i} has shape {tuple(student.shape)}; expected (batch={len(teacher_map)}, height, width)."
            )
    maps = [teacher_map] if isinstance(teacher_map, torch.Tensor) else teacher_map
    if not all(torch.isfinite(m).all() for m in maps):
        raise ValueError("The teacher interaction map contains NaN or infinite values.")
    if any((m < 0).any() for m in maps):
        raise ValueError(
            "The teacher interaction map has negative values; C_VLM is a non-negative distribution (Eq. 11/12)."
        )


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
        epsilon: smoothing mass added to every patch of both maps before the logarithm.
        layer_weights: one weight per student map; default 1 / num_layers (the mean over layers).
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}.")
    _check_maps(student_maps, teacher_map)
    if layer_weights is None:
        layer_weights = [1.0 / len(student_maps)] * len(student_maps)
    if len(layer_weights) != len(student_maps):
        raise ValueError(f"Got {len(layer_weights)} layer weights for {len(student_maps)} student maps.")

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
    "place_teacher_maps",
    "resample_teacher_map",
]
