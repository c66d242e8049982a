"""Interaction maps as distributions over an image grid: the teacher's contrast of foreground and background
attention (Eq. 11/12), cropping, and teacher maps from segmentation masks (a *mask teacher*).

Any segmentation or human-annotation dataset can act as a teacher, as the paper's human maps C_HUM do (Fig. 6):
the mask is area-pooled onto the teacher grid and L1-normalised like C_VLM (Eq. 11). A degraded variant (Gaussian
blur, a share of the mass leaked uniformly to the background) shows how results depend on teacher quality.
"""

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch.nn import functional as F

# a map is cropped on a grid this many times finer than its own, then pooled back
_MAP_CROP_UPSAMPLING = 8


def _normalise(interaction_map: torch.Tensor) -> torch.Tensor:
    """L1-normalised map, or the all-zero map unchanged (no teacher signal)."""
    total = interaction_map.sum()
    return interaction_map / total if total > 0 else interaction_map


def contrast_map(foreground: Sequence[torch.Tensor], background: torch.Tensor | None = None) -> torch.Tensor:
    """C_VLM = max(0, sum_k C_fore^(k) - C_back) / || . ||_1 (Eq. 11 with one foreground, Eq. 12 with one per target).

    Maps of any shape; `background=None` means C_back = 0. All zero when nothing is left after the subtraction.
    """
    if len(foreground) == 0:
        raise ValueError("contrast_map needs at least one foreground map.")
    maps = list(foreground) + ([] if background is None else [background])
    if not all(torch.isfinite(m).all() for m in maps):
        raise ValueError("contrast_map got NaN or infinite attention maps.")
    positive = torch.stack(list(foreground)).sum(0)
    if background is not None:
        positive = positive - background
    return _normalise(positive.clamp_min(0))


def crop_interaction_map(
    interaction_map: torch.Tensor, box: tuple[int, int, int, int], image_size: tuple[int, int]
) -> torch.Tensor:
    """The part of a map (covering the whole image of `image_size` = (width, height)) inside the pixel `box`,
    pooled back onto the map's grid and renormalised (all zero if the box holds no mass)."""
    rows, cols = interaction_map.shape
    width, height = image_size
    left, top, right, bottom = box
    if not (0 <= left < right <= width and 0 <= top < bottom <= height):
        raise ValueError(f"box {tuple(box)} (left, top, right, bottom) is not inside the {width}x{height} image.")
    fine = F.interpolate(interaction_map[None, None].float(), scale_factor=_MAP_CROP_UPSAMPLING, mode="nearest")[0, 0]
    x0 = min(round(left / width * fine.shape[1]), fine.shape[1] - 1)
    y0 = min(round(top / height * fine.shape[0]), fine.shape[0] - 1)
    x1 = max(round(right / width * fine.shape[1]), x0 + 1)
    y1 = max(round(bottom / height * fine.shape[0]), y0 + 1)
    return _normalise(F.adaptive_avg_pool2d(fine[y0:y1, x0:x1][None, None], (rows, cols))[0, 0])


def mask_to_grid(mask, grid: tuple[int, int]) -> torch.Tensor:
    """Fraction of each cell of `grid` covered by the mask's foreground (any value > 0), shape `grid`, float32."""
    mask = torch.from_numpy(np.array(mask))  # a copy: PIL-backed arrays are read-only
    if mask.numel() == 0:
        raise ValueError(f"A mask is empty (shape {tuple(mask.shape)}): it must cover the image, one value a pixel.")
    if mask.is_floating_point() and not mask.isfinite().all():
        raise ValueError("A mask has NaN or infinite values; foreground is any value > 0, background 0.")
    if mask.ndim == 3:  # an RGB(A) mask: foreground where any channel is set
        mask = mask.amax(dim=-1)
    if mask.ndim != 2:
        raise ValueError(
            f"A mask must be (height, width) or (height, width, channels), got shape {tuple(mask.shape)}."
        )
    foreground = (mask > 0).float()[None, None]
    return F.adaptive_avg_pool2d(foreground, grid)[0, 0]


def _gaussian_blur(grid_map: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=grid_map.dtype)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    image = grid_map[None, None]
    image = F.conv2d(F.pad(image, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    image = F.conv2d(F.pad(image, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
    return image[0, 0]


def check_mask_teacher(grid, blur_sigma: float, leak: float) -> tuple[tuple[int, int], float, float]:
    """The settings of a mask teacher, checked: `grid` two positive integers, `blur_sigma` >= 0, `leak` in [0, 1]."""
    if isinstance(grid, (str, bytes)) or not hasattr(grid, "__len__") or len(grid) != 2:
        raise ValueError(f"grid must be (rows, columns), got {grid!r}.")
    if not all(isinstance(size, (int, np.integer)) and size > 0 for size in grid):
        raise ValueError(f"grid must be two positive integers (rows, columns), got {tuple(grid)}.")
    if not 0 <= blur_sigma < math.inf:
        raise ValueError(f"blur_sigma must be >= 0 and finite, got {blur_sigma}.")
    if not 0 <= leak <= 1:
        raise ValueError(f"leak must be in [0, 1], got {leak}.")
    return (int(grid[0]), int(grid[1])), float(blur_sigma), float(leak)


def mask_to_interaction_map(mask, grid: tuple[int, int], blur_sigma: float = 0.0, leak: float = 0.0) -> torch.Tensor:
    """A teacher map from a segmentation mask: foreground coverage on `grid`, L1-normalised (as Eq. 11).

    Args:
        mask: (height, width) array or PIL image; foreground is any value > 0.
        grid: (rows, cols) of the teacher map, e.g. (24, 24) like LLaVA-1.5.
        blur_sigma: Gaussian blur of the map, in grid cells (0 = none).
        leak: share of the mass moved uniformly onto the background cells (0 = a perfect teacher, 1 = the
            mass lies only outside the object).

    Returns the map (sums to 1), or all zeros when the mask has no foreground (an invalid teacher row).
    """
    grid, blur_sigma, leak = check_mask_teacher(grid, blur_sigma, leak)
    coverage = mask_to_grid(mask, grid)
    total = coverage.sum()
    if total == 0:
        return coverage
    interaction = coverage / total
    if blur_sigma > 0:
        interaction = _gaussian_blur(interaction, blur_sigma)
        interaction = interaction / interaction.sum()
    if leak > 0:
        background = 1 - coverage
        if background.sum() > 0:
            interaction = (1 - leak) * interaction + leak * background / background.sum()
    return interaction


__all__ = ["check_mask_teacher", "contrast_map", "crop_interaction_map", "mask_to_grid", "mask_to_interaction_map"]
