"""Figures of what an I-model learned (matplotlib, no display needed): one image's maps of a layer overlaid on it
(teacher C_VLM, C_VFM, C_AGT, C_F, the student map), the gates per layer (paper Fig. 11), the explorer's current
view as one figure, and the model card's figure (teacher vs student maps on a few validation images, and gates)."""

import io

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

from ..interactions.plotting import overlay_map
from .analysis import ImageAnalysis

GATE_COLOURS = {"g1": "tab:red", "g2": "tab:blue"}  # g1 weighs C_AGT, g2 weighs C_VFM (Eq. 6)


def _clear(axis) -> None:
    axis.set_xticks([])
    axis.set_yticks([])


def _draw_image(axis, analysis: ImageAnalysis) -> None:
    """The image, with the predicted boxes of a detector and the outline of the mask, if any."""
    axis.imshow(np.asarray(analysis.image))
    if analysis.mask is not None:
        mask = analysis.mask.max(axis=-1) if analysis.mask.ndim == 3 else analysis.mask
        height, width = np.asarray(analysis.image).shape[:2]
        axis.contour(mask > 0, levels=[0.5], colors="white", linewidths=1, extent=(0, width, 0, height))
        axis.set_ylim(height, 0)
    for box in (analysis.prediction.boxes or [])[:3]:
        x0, y0, x1, y1 = box
        axis.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="yellow", linewidth=1.5))


def draw_maps(figure, analysis: ImageAnalysis, position: int, head: int | None) -> None:
    """One row: the image, the teacher map (if any) and the layer's C_VFM, C_AGT, C_F and student map overlays."""
    maps = analysis.maps(position, head)
    teacher = analysis.teacher
    columns = 1 + (teacher is not None) + len(maps)
    axes = list(figure.subplots(1, columns, squeeze=False)[0])
    _draw_image(axes[0], analysis)
    axes[0].set_title((analysis.title or "image").replace(" (", "\n("), fontsize=10)  # "split #i\n(label)"
    next_axis = 1
    if teacher is not None:
        axis = axes[1]
        if teacher.interaction_map is not None and np.asarray(teacher.interaction_map).sum() > 0:
            overlay_map(axis, analysis.image, teacher.interaction_map)
        else:
            axis.imshow(np.asarray(analysis.image))
        axis.set_title(f"teacher C_VLM\n{teacher.status}", fontsize=10)
        next_axis = 2
    which = "mean of heads" if head is None else f"head {head}"
    layer = analysis.layers[position]
    for axis, (name, values) in zip(axes[next_axis:], maps.items()):
        overlay_map(axis, analysis.image, values)
        detail = f"layer {layer}" if name == "student map" else f"layer {layer} · {which}"
        axis.set_title(f"{name}\n{detail}", fontsize=10)
    for axis in axes:
        _clear(axis)


def draw_gates(axis, analysis: ImageAnalysis | None, split_gates: np.ndarray | None, layers, split_label: str) -> None:
    """Gates per interaction layer (paper Fig. 11): this image's g1 and g2 averaged over heads (each head a dot), and
    the mean over the split's images with its standard deviation."""
    for index, name in enumerate(("g1", "g2")):
        colour = GATE_COLOURS[name]
        weighs = "C_AGT" if name == "g1" else "C_VFM"
        if analysis is not None:
            per_head = analysis.gates[:, :, index]  # [layers, heads]
            for head_values in per_head.T:
                axis.scatter(layers, head_values, s=8, color=colour, alpha=0.3)
            axis.plot(layers, per_head.mean(axis=1), marker="o", color=colour, label=f"{name} ({weighs}), image")
        if split_gates is not None:
            mean, std = split_gates[:, 0, index], split_gates[:, 1, index]
            axis.plot(layers, mean, linestyle="--", color=colour, label=f"{name}, {split_label}")
            axis.fill_between(layers, mean - std, mean + std, color=colour, alpha=0.12)
    axis.set_title(f"gates per layer: {analysis.title}" if analysis is not None else "gates per layer", fontsize=9)
    axis.set_xlabel("interaction layer")
    axis.set_ylabel("mean gate")
    axis.set_xticks(layers)
    axis.set_ylim(-0.02, 1.02)
    axis.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.26), ncols=2, frameon=False)


def plot_maps(analysis: ImageAnalysis, position: int, head: int | None = None) -> Figure:
    columns = 1 + (analysis.teacher is not None) + 4
    figure = Figure(figsize=(2.0 * columns, 2.7), layout="constrained")
    figure.get_layout_engine().set(h_pad=0.25)  # room above the titles for the page's fullscreen button
    draw_maps(figure, analysis, position, head)
    return figure


def plot_gates(
    analysis: ImageAnalysis | None, split_gates: np.ndarray | None, layers, split_label: str = "split"
) -> Figure:
    figure = Figure(figsize=(6, 3.2), layout="constrained")
    draw_gates(figure.subplots(), analysis, split_gates, layers, split_label)
    return figure


def describe(analysis: ImageAnalysis, position: int) -> str:
    """The text of the current view: predictions, and the layer's alignment with the teacher and the mask."""
    lines = [f"I-model: {analysis.prediction.describe()}"]
    if analysis.baseline_prediction is not None:
        lines.append(f"baseline: {analysis.baseline_prediction.describe()}")
    layer = analysis.layers[position]
    if analysis.kl is not None:
        lines.append(f"layer {layer}: KL(student || teacher) = {analysis.kl[position]:.4f}")
    for name, scores in analysis.mask_alignment.items():
        lines.append(f"layer {layer}: {name} vs mask IoU {scores[position]['iou_at_top_k']:.3f}")
    return "\n".join(lines)


def plot_view(
    analysis: ImageAnalysis,
    position: int,
    head: int | None,
    split_gates: np.ndarray | None = None,
    split_label: str = "split",
) -> Figure:
    """The explorer's current view as one figure: the maps of the layer, the gates, the predictions and scores."""
    columns = 1 + (analysis.teacher is not None) + 4
    figure = Figure(figsize=(2.3 * columns, 6.6), layout="constrained")
    which = "mean of heads" if head is None else f"head {head}"
    figure.suptitle(f"{analysis.title}: interaction layer {analysis.layers[position]}, {which}", fontsize=11)
    top, bottom = figure.subfigures(2, 1, height_ratios=[1.1, 1.3])
    draw_maps(top, analysis, position, head)
    gates_axis, text_axis = bottom.subplots(1, 2, width_ratios=[1.3, 1])
    draw_gates(gates_axis, analysis, split_gates, analysis.layers, split_label)
    text_axis.axis("off")
    text_axis.text(0, 1, describe(analysis, position), va="top", fontsize=8, wrap=True, family="monospace")
    return figure


def plot_card_figure(
    analyses: list[ImageAnalysis], split_gates: np.ndarray | None = None, split_label: str = "validation"
) -> Figure:
    """The model card's figure: per image, the teacher map next to the student map (the map the loss aligns with
    it) and the original attention C_VFM of the last interaction layer; below, the gates per layer averaged over the
    images (paper Fig. 11)."""
    position = -1
    layer = analyses[0].layers[position]
    titles = ["image", "teacher C_VLM", f"student map (layer {layer})", f"C_VFM (layer {layer})"]
    figure = Figure(figsize=(2.2 * len(titles), 2.2 * len(analyses) + 2.4), layout="constrained")
    maps_part, gates_part = figure.subfigures(2, 1, height_ratios=[2.2 * len(analyses), 2.4])
    axes = maps_part.subplots(len(analyses), len(titles), squeeze=False)
    for row, analysis in zip(axes, analyses):
        _draw_image(row[0], analysis)
        row[0].set_ylabel(analysis.title, fontsize=8)
        teacher = analysis.teacher
        if teacher is not None and teacher.interaction_map is not None and teacher.valid:
            overlay_map(row[1], analysis.image, teacher.interaction_map)
        else:
            row[1].imshow(np.asarray(analysis.image))
            row[1].set_xlabel("no teacher map", fontsize=7)
        overlay_map(row[2], analysis.image, analysis.student[position])
        overlay_map(row[3], analysis.image, analysis.original_mean[position])
        for axis in row:
            _clear(axis)
    for axis, title in zip(axes[0], titles):
        axis.set_title(title, fontsize=9)
    draw_gates(gates_part.subplots(), None, split_gates, analyses[0].layers, split_label)
    return figure


def figure_to_image(figure: Figure, dpi: int = 100) -> Image.Image:
    """A figure rendered as a PIL image."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


__all__ = [
    "describe",
    "draw_gates",
    "draw_maps",
    "figure_to_image",
    "plot_card_figure",
    "plot_gates",
    "plot_maps",
    "plot_view",
]
