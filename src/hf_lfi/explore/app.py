"""The `hf-lfi explore` page (Gradio): pick an image of the dataset split (or upload one), see the I-model's prediction
next to the baseline's, and per interaction layer the teacher map, C_VFM, C_AGT, C_F (per head or averaged) and the
student map overlaid on it, the alignment with the teacher and the mask, and the gates per layer (paper Fig. 11);
"Download figure" writes the current view as a PNG.

The model, baseline, dataset and teacher load on the first visit, with progress on the page, and are shared by
every visitor. Bad input (an unreadable upload, a dataset without images, a model that is not an I-model) is
reported on the page in the status line, never as a stack trace.
"""

import logging
import re
import tempfile
import threading
from pathlib import Path

import gradio as gr

from .explorer import MASK_TEACHER, ExploreError, Explorer, ExploreSettings
from .figures import figure_to_image, plot_gates, plot_maps, plot_view

logger = logging.getLogger(__name__)
MEAN_OF_HEADS = -1


def _head(value) -> int | None:
    return None if value is None or int(value) == MEAN_OF_HEADS else int(value)


def _message(error: Exception) -> str:
    text = str(error) if isinstance(error, ExploreError) else f"{type(error).__name__}: {error}"
    return f"**Error:** {text}"


class ExploreApp:
    """One explorer page over `settings`: `blocks()` builds it (serve it with `.launch()`)."""

    def __init__(self, settings: ExploreSettings):
        self.settings = settings
        self._explorer: Explorer | None = None
        self._lock = threading.Lock()
        self._figures = Path(tempfile.mkdtemp(prefix="hf-lfi-explore-"))

    # ------------------------------------------------------------------------------------------------ loading
    def explorer(self, progress=None) -> Explorer:
        """The loaded explorer (loaded once, by the first visit)."""
        with self._lock:
            if self._explorer is None:
                report = (lambda fraction, what: progress(fraction, desc=what)) if progress is not None else None
                self._explorer = Explorer.load(self.settings, report)
            return self._explorer

    def header(self, explorer: Explorer) -> str:
        settings, config = self.settings, explorer.model.config
        gate = (
            "no gate"
            if config.gate_granularity == "none"
            else f"{config.gate_form} gate per {config.gate_granularity}"
        )
        lines = [
            f"**{settings.model}**: {type(explorer.model).__name__}, interaction layers "
            f"{list(config.interaction_layer_indices)}, {gate}"
        ]
        if settings.baseline:
            lines.append(f"baseline **{settings.baseline}**: {type(explorer.baseline).__name__}")
        if explorer.rows is not None:
            if settings.teacher == MASK_TEACHER:
                teacher = f"mask teacher (column {settings.mask_column!r})"
            elif settings.teacher:
                teacher = f"{settings.teacher}, asked online"
            else:
                teacher = f"column {settings.map_column!r}"
            lines.append(
                f"data **{settings.dataset}** ({settings.split}, first {len(explorer.rows)} images), teacher: {teacher}"
            )
        return "  \n".join(lines)

    def split_label(self, explorer: Explorer) -> str:
        return f"mean of {len(explorer.rows)} {self.settings.split} images" if explorer.rows is not None else ""

    # ----------------------------------------------------------------------------------------------- handlers
    def start(self, progress=gr.Progress()):
        """First view: header, thumbnails, layer and head choices, status; then the first image is shown."""
        try:
            explorer = self.explorer(progress)
        except Exception as error:
            logger.exception("hf-lfi explore could not load")
            return (gr.skip(),) * 4 + (_message(error),)
        layers = list(explorer.model.config.interaction_layer_indices)
        choices = [("mean of heads", MEAN_OF_HEADS)] + [(f"head {h}", h) for h in range(explorer.num_heads)]
        notes = " ".join(explorer.notes) or (
            "Pick an image or upload one." if explorer.rows is not None else "Upload an image."
        )
        return (
            self.header(explorer),
            explorer.thumbnails(),
            gr.Slider(minimum=0, maximum=len(layers) - 1, value=len(layers) - 1, step=1, info=f"layers {layers}"),
            gr.Dropdown(choices=choices, value=MEAN_OF_HEADS),
            notes,
        )

    def first_view(self, position, head, progress=gr.Progress()):
        """The first row of the split, once the explorer is loaded."""
        explorer = self._explorer
        if explorer is None or explorer.rows is None:
            return (gr.skip(),) * 7
        progress(0.1, desc=self._work(explorer, "image #0"))
        return self._safe_view(lambda: explorer.analyse_row(0), position, head)

    def _work(self, explorer: Explorer, what: str) -> str:
        """What the progress bar says while an image is analysed (the online teacher answers first)."""
        if explorer.extractor is not None:
            return f"asking the teacher {self.settings.teacher} about {what}, then the model"
        return f"running the model on {what}"

    def _view(self, analysis, position, head) -> tuple:
        """Everything the page shows for an analysed image at a layer position and head."""
        explorer = self._explorer
        position = min(int(position), len(analysis.layers) - 1)
        head = _head(head)
        label = self.split_label(explorer)
        split_gates = explorer.split_gates
        maps = figure_to_image(plot_maps(analysis, position, head))
        gates = figure_to_image(plot_gates(analysis, split_gates, analysis.layers, label))
        name = re.sub(r"[^\w.-]+", "-", analysis.title).strip("-") or "image"
        which = "mean" if head is None else f"head{head}"
        path = self._figures / f"{name}-layer{analysis.layers[position]}-{which}.png"
        plot_view(analysis, position, head, split_gates, label).savefig(path, dpi=100)
        status = f"Showing {analysis.title}, layer {analysis.layers[position]}, " + (
            "mean of heads." if head is None else f"head {head}."
        )
        return (
            analysis,
            maps,
            gates,
            self.predictions(analysis),
            self.alignment(analysis, position),
            gr.DownloadButton(value=str(path), interactive=True),
            status,
        )

    def _safe_view(self, analyse, position, head) -> tuple:
        try:
            return self._view(analyse(), position, head)
        except Exception as error:
            if not isinstance(error, ExploreError):
                logger.exception("hf-lfi explore could not show the image")
            return (gr.skip(),) * 6 + (_message(error),)

    def select_row(self, position, head, event: gr.SelectData, progress=gr.Progress()):
        explorer = self._explorer
        if explorer is None:
            return (gr.skip(),) * 6 + ("**Error:** the model is not loaded; reload the page.",)
        progress(0.1, desc=self._work(explorer, f"image #{event.index}"))
        return self._safe_view(lambda: explorer.analyse_row(event.index), position, head)

    def upload(self, path, position, head, progress=gr.Progress()):
        explorer = self._explorer
        if explorer is None:
            return (gr.skip(),) * 6 + ("**Error:** the model is not loaded; reload the page.",)
        progress(0.1, desc=self._work(explorer, "the uploaded image"))
        return self._safe_view(lambda: explorer.analyse_upload(path), position, head)

    def change_view(self, analysis, position, head):
        if analysis is None:
            return (gr.skip(),) * 7
        return self._safe_view(lambda: analysis, position, head)

    # -------------------------------------------------------------------------------------------------- text
    @staticmethod
    def predictions(analysis) -> str:
        """The I-model's top-5 (or top boxes) next to the baseline's, as one table."""
        models = [("I-model", analysis.prediction)]
        if analysis.baseline_prediction is not None:
            models.append(("baseline", analysis.baseline_prediction))
        boxes = analysis.prediction.boxes is not None

        def cell(prediction, rank: int) -> str:
            if rank >= len(prediction.labels):
                return ""
            text = f"{prediction.labels[rank]} {prediction.scores[rank]:.3f}"
            if boxes:
                text += " [" + ", ".join(f"{v:.0f}" for v in prediction.boxes[rank]) + "]"
            return text

        lines = ["| rank | " + " | ".join(name for name, _ in models) + " |", "|---|" + "---|" * len(models)]
        rows = max(len(prediction.labels) for _, prediction in models)
        for rank in range(rows):
            lines.append(f"| {rank + 1} | " + " | ".join(cell(p, rank) for _, p in models) + " |")
        what = "boxes (score, x0, y0, x1, y1)" if boxes else "top-5 classes (probability)"
        return f"Predictions on {analysis.title}: {what}\n\n" + "\n".join(lines)

    @staticmethod
    def alignment(analysis, position: int) -> str:
        """Per layer: KL to the teacher, closeness of the maps to the mask, gates; the shown layer in bold."""
        teacher = analysis.teacher
        if teacher is None:
            lines = ["No teacher map for this image."]
        else:
            lines = [f"Teacher: {teacher.source}, status `{teacher.status}`" + ("" if teacher.valid else " (invalid)")]
            if analysis.teacher_mask_alignment is not None:
                lines[0] += f", IoU with the mask {analysis.teacher_mask_alignment['iou_at_top_k']:.3f}"
        short = {"C_VFM": "IoU VFM", "C_AGT": "IoU AGT", "student map": "IoU student"}
        header = ["layer", "KL"] + [short[name] for name in analysis.mask_alignment] + ["g1", "g2"]
        lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for index, layer in enumerate(analysis.layers):
            cells = [str(layer), f"{analysis.kl[index]:.3f}" if analysis.kl is not None else "n/a"]
            cells += [f"{scores[index]['iou_at_top_k']:.2f}" for scores in analysis.mask_alignment.values()]
            g1, g2 = analysis.gates[index].mean(axis=0)
            cells += [f"{g1:.3f}", f"{g2:.3f}"]
            if index == position:
                cells = [f"**{cell}**" for cell in cells]
            lines.append("| " + " | ".join(cells) + " |")
        lines += [
            "",
            "KL: D_KL(student map ‖ teacher map), the alignment loss (Eq. 14). IoU: the map's top cells vs the mask "
            "(Fig. 6). g1 weighs C_AGT, g2 C_VFM (Eq. 6), mean of heads.",
        ]
        return "\n".join(lines)

    # ------------------------------------------------------------------------------------------------- page
    def blocks(self) -> gr.Blocks:
        with gr.Blocks(title="hf-lfi explore", analytics_enabled=False) as demo:
            gr.Markdown("## hf-lfi explore: where the I-model looks, layer by layer")
            header = gr.Markdown(elem_id="header")
            status = gr.Markdown(elem_id="status")
            analysis = gr.State(None)
            with gr.Row():
                with gr.Column(scale=1, min_width=280):
                    gallery = gr.Gallery(
                        label="images: index · label · teacher status",
                        columns=2,
                        height=560,
                        allow_preview=False,
                        elem_id="gallery",
                    )
                    upload = gr.UploadButton("Upload an image", file_types=["image"], size="sm", elem_id="upload")
                with gr.Column(scale=3):
                    with gr.Row(equal_height=True):
                        layer = gr.Slider(0, 1, value=0, step=1, label="interaction layer", elem_id="layer")
                        head = gr.Dropdown(label="heads", choices=[("mean of heads", MEAN_OF_HEADS)], elem_id="head")
                        download = gr.DownloadButton(
                            "Download figure", interactive=False, size="sm", scale=0, elem_id="download"
                        )
                    maps = gr.Image(
                        type="pil", interactive=False, show_label=False, buttons=["fullscreen"], elem_id="maps"
                    )
                    with gr.Row():
                        gates = gr.Image(type="pil", interactive=False, show_label=False, buttons=[], elem_id="gates")
                        predictions = gr.Markdown(elem_id="predictions")
                    alignment = gr.Markdown(elem_id="alignment")
            view = [analysis, maps, gates, predictions, alignment, download, status]
            # one model, one queue: the events that run it or draw its figures run one at a time
            serial = dict(outputs=view, concurrency_id="explore", concurrency_limit=1)
            loaded = demo.load(self.start, outputs=[header, gallery, layer, head, status])
            loaded.then(self.first_view, inputs=[layer, head], **serial)
            gallery.select(self.select_row, inputs=[layer, head], **serial)
            upload.upload(self.upload, inputs=[upload, layer, head], **serial)
            for control in (layer, head):
                control.change(self.change_view, inputs=[analysis, layer, head], trigger_mode="always_last", **serial)
        return demo


def build_app(settings: ExploreSettings) -> gr.Blocks:
    """The explorer page for `settings` (serve it with `.launch()`; on a Hugging Face Space, as `demo`)."""
    return ExploreApp(settings).blocks()


__all__ = ["ExploreApp", "build_app"]
