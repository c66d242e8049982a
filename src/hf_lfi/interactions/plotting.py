"""Looking at interaction maps: image | map overlays in a grid, saved as PNG (matplotlib, no display needed)."""

import os
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure


def _as_maps(entry) -> list[np.ndarray]:
    """One entry of `maps`: a list of 2-d maps, or one map (array, tensor or nested lists)."""
    if isinstance(entry, (list, tuple)) and entry and all(np.ndim(x) == 2 for x in entry):
        return [np.asarray(x, dtype=np.float32) for x in entry]
    return [np.asarray(entry, dtype=np.float32)]


def overlay_map(axis, image, interaction_map, alpha: float = 0.55, cmap: str = "jet") -> None:
    """Draw `image` with a 2-d map laid over it, stretched to the image (the map's grid covers the whole image)."""
    pixels = np.asarray(image)
    height, width = pixels.shape[:2]
    axis.imshow(pixels, cmap="gray" if pixels.ndim == 2 else None)
    axis.imshow(
        np.asarray(interaction_map, dtype=np.float32),
        cmap=cmap,
        alpha=alpha,
        extent=(0, width, height, 0),
        interpolation="bilinear",
    )


def plot_interaction_maps(
    images: Sequence,
    maps: Sequence,
    titles: Sequence[str] | None = None,
    row_labels: Sequence[str] | None = None,
    path: str | os.PathLike | None = None,
    alpha: float = 0.55,
    cmap: str = "jet",
) -> Figure:
    """One row per image: the image, then each of its maps laid over it (stretched to the image, as the grid covers
    the whole image).

    Args:
        images: PIL images or (H, W[, 3]) arrays.
        maps: per image, one 2-d map or a list of maps (e.g. mask, C_VLM, C_VFM, C_AGT).
        titles: column titles after "image", one per map.
        row_labels: a label per row (e.g. the class or the teacher's answer).
        path: where to save the PNG; the figure is returned either way.
    """
    if len(images) != len(maps):
        raise ValueError(f"Got {len(images)} images and {len(maps)} map entries.")
    rows = [_as_maps(entry) for entry in maps]
    columns = 1 + max(len(r) for r in rows)
    figure = Figure(figsize=(2.2 * columns, 2.2 * len(images)), layout="constrained")
    axes = figure.subplots(len(images), columns, squeeze=False)
    for i, (image, row) in enumerate(zip(images, rows)):
        pixels = np.asarray(image)
        axes[i, 0].imshow(pixels, cmap="gray" if pixels.ndim == 2 else None)
        if row_labels is not None:
            axes[i, 0].set_ylabel(row_labels[i], fontsize=8)
        for j, interaction in enumerate(row, start=1):
            if interaction.ndim != 2:
                raise ValueError(f"Map {j - 1} of image {i} must be 2-d, got shape {interaction.shape}.")
            overlay_map(axes[i, j], pixels, interaction, alpha, cmap)
        for axis in axes[i]:
            axis.set_xticks([])
            axis.set_yticks([])
    axes[0, 0].set_title("image", fontsize=9)
    for j, title in enumerate(titles or [], start=1):
        axes[0, j].set_title(title, fontsize=9)
    if path is not None:
        figure.savefig(path, dpi=100)
    return figure


__all__ = ["overlay_map", "plot_interaction_maps"]
