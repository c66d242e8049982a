"""Interaction maps as distributions over an image grid: teacher maps from segmentation masks (a *mask teacher*).

Any segmentation or human-annotation dataset can act as a teacher, as the paper's human maps C_HUM do (Fig. 6):
the mask is area-pooled onto the teacher grid and L1-normalised like C_VLM (Eq. 11). A degraded variant (Gaussian
blur, a share of the mass leaked uniformly to the background) shows how results depend on teacher quality.
"""

import math

import numpy as np
import torch
from torch.nn import functional as F


def mask_to_grid(mask, grid: tuple[int, int]) -> torch.Tensor:
    """Fraction of each cell of `grid` covered by the mask's foreground (any value > 0), shape `grid`, float32."""
    mask = torch.as_tensor(np.asarray(mask))
    if mask.ndim == 3:  # an RGB(A) mask: foreground where any channel is set
        mask = mask.amax(dim=-1)
    if mask.ndim != 2:
        raise ValueError(f"A mask must be (height, width) or (height, width, channels), got shape {tuple(mask.shape)}.")
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
    if blur_sigma < 0:
        raise ValueError(f"blur_sigma must be >= 0, got {blur_sigma}.")
    if not 0 <= leak <= 1:
        raise ValueError(f"leak must be in [0, 1], got {leak}.")
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


__all__ = ["mask_to_grid", "mask_to_interaction_map"]
