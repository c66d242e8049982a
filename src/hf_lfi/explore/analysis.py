"""What a trained I-model does on one image, read from its public outputs: the prediction, and per interaction layer
C_VFM, C_AGT and C_F (`original_attentions`, `interaction_attentions`, `attentions`) on the image grid, per head and
averaged, the student map the loss compares (`interaction_maps`), the gates, and its alignment with the teacher map
(the KL of `alignment_loss`, paper Eq. 14) and with a ground-truth mask (`interaction_alignment`, paper Fig. 6)."""

from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from .. import metrics
from ..modeling.interaction_attention import InteractionAttentionMixin, student_map_from_attention
from ..training.alignment import alignment_loss, place_teacher_maps

TOP_K = 5


@dataclass
class Prediction:
    """A model's answer on one image: the top classes, or the top boxes (x0, y0, x1, y1 in image pixels)."""

    labels: list[str]
    scores: list[float]
    boxes: list[tuple[float, float, float, float]] | None = None

    def describe(self) -> str:
        if self.boxes is None:
            return " · ".join(f"{label} {score:.2f}" for label, score in zip(self.labels, self.scores))
        return " · ".join(
            f"{label} {score:.2f} [{', '.join(f'{v:.0f}' for v in box)}]"
            for label, score, box in zip(self.labels, self.scores, self.boxes)
        )


@dataclass
class TeacherMap:
    """The teacher's map of an image (C_VLM, its own grid, covering the whole image) and where it came from."""

    interaction_map: np.ndarray | None
    status: str
    valid: bool
    source: str


@dataclass
class ImageAnalysis:
    """Everything the explorer shows for one image. Maps are on the student's grid of the image (padding cut off);
    per-layer arrays follow `layers` (the interaction layers)."""

    image: Image.Image
    title: str
    layers: list[int]
    original: np.ndarray  # C_VFM per layer and head: [layers, heads, rows, cols]
    interaction: np.ndarray  # C_AGT
    fused: np.ndarray  # C_F
    original_mean: np.ndarray  # heads averaged as the student map averages them: [layers, rows, cols]
    interaction_mean: np.ndarray
    fused_mean: np.ndarray
    student: np.ndarray  # the student maps the loss compares (`interaction_maps`): [layers, rows, cols]
    gates: np.ndarray  # mean (g1, g2) of every head: [layers, heads, 2]
    prediction: Prediction
    baseline_prediction: Prediction | None = None
    teacher: TeacherMap | None = None
    mask: np.ndarray | None = None
    # per layer: D_KL(student || teacher) and the closeness of the maps to the mask
    kl: list[float] | None = None
    mask_alignment: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    teacher_mask_alignment: dict[str, float] | None = None

    def maps(self, position: int, head: int | None) -> dict[str, np.ndarray]:
        """The maps of the `position`-th interaction layer, for one head or (None) averaged over heads."""
        if head is None:
            views = (self.original_mean, self.interaction_mean, self.fused_mean)
            original, interaction, fused = (v[position] for v in views)
        else:
            original, interaction, fused = (v[position, head] for v in (self.original, self.interaction, self.fused))
        return {"C_VFM": original, "C_AGT": interaction, "C_F": fused, "student map": self.student[position]}


def interaction_attention_modules(model) -> list[InteractionAttentionMixin]:
    """The interaction attentions of a model, in layer order (the order of its per-layer outputs)."""
    return [module for module in model.modules() if isinstance(module, InteractionAttentionMixin)]


def attention_on_grid(
    attention: torch.Tensor, module: InteractionAttentionMixin, grid: tuple[int, int], key_mask=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """An attention map [1, heads, queries, keys] read as the student map is read (the module's reduction of the
    query rows, prefix keys dropped, padded keys zeroed, renormalised), per head [heads, rows, cols] and with the
    heads averaged [rows, cols]."""
    reduction, prefix = module.student_map_reduction, module.num_prefix_tokens
    heads = attention.shape[1]
    per_head_mask = key_mask.expand(heads, -1) if key_mask is not None else None
    per_head = student_map_from_attention(attention.transpose(0, 1), reduction, prefix, per_head_mask)
    mean = student_map_from_attention(attention, reduction, prefix, key_mask)[0]
    return per_head.unflatten(-1, grid), mean.unflatten(-1, grid)


@contextmanager
def eager_attention(model):
    """Run `model` with materialised attention in the block (`attn_implementation="eager"`, the implementation that
    returns C_VFM, C_AGT and C_F); its own implementation is restored after. Only the model's own config switches
    (`{"": ...}`): sub-configs keep theirs (DETR's backbone has no SDPA to be restored to)."""
    previous = model.config._attn_implementation
    if previous != "eager":
        model.set_attn_implementation({"": "eager"})
    try:
        yield model
    finally:
        if previous != "eager":
            model.set_attn_implementation({"": previous})


def predict(model, processor, outputs, image: Image.Image) -> Prediction:
    """Top-5 classes of a classifier, or the 5 highest-scoring boxes of a detector (the processor's post-processing)."""
    if getattr(outputs, "pred_boxes", None) is not None:
        width, height = image.size
        found = processor.post_process_object_detection(outputs, threshold=0.0, target_sizes=[(height, width)])[0]
        order = found["scores"].argsort(descending=True)[:TOP_K]
        return Prediction(
            [model.config.id2label.get(int(i), str(int(i))) for i in found["labels"][order]],
            found["scores"][order].tolist(),
            [tuple(box) for box in found["boxes"][order].tolist()],
        )
    probabilities = outputs.logits[0].float().softmax(-1)
    top = probabilities.topk(min(TOP_K, probabilities.numel()))
    labels = [model.config.id2label.get(int(i), str(int(i))) for i in top.indices]
    return Prediction(labels, top.values.tolist())


@torch.no_grad()
def analyse_image(
    model,
    processor,
    image: Image.Image,
    title: str = "",
    teacher: TeacherMap | None = None,
    mask=None,
    baseline=None,
    baseline_processor=None,
    alignment_metric=None,
) -> ImageAnalysis:
    """Run the I-model (and its baseline) on one image and read every map, gate and score the explorer shows.

    The model runs with materialised attention (`eager_attention`), whatever its own implementation.
    `alignment_metric` is the `interaction_alignment` module (loaded here when not given and a mask is).
    """
    image = image.convert("RGB")
    inputs = processor(images=[image], return_tensors="pt").to(model.device)
    with eager_attention(model):
        outputs = model(**inputs, output_interactions=True, output_attentions=True)
    layers = list(model.config.interaction_layer_indices)
    fused_all = getattr(outputs, "encoder_attentions", None) or outputs.attentions
    grid_mask = getattr(outputs, "interaction_mask", None)
    key_mask = grid_mask.flatten(1) if grid_mask is not None else None
    modules = interaction_attention_modules(model)
    grid = tuple(outputs.interaction_maps[0].shape[-2:])
    # the real (unpadded) part of the grid; all of it for a single image unless the processor pads to a fixed size
    rows = int(grid_mask[0].any(dim=1).sum()) if grid_mask is not None else grid[0]
    cols = int(grid_mask[0].any(dim=0).sum()) if grid_mask is not None else grid[1]

    per_head, means = {}, {}
    sources = {
        "original": outputs.original_attentions,
        "interaction": outputs.interaction_attentions,
        "fused": [fused_all[layer] for layer in layers],
    }
    for name, attentions in sources.items():
        pairs = [attention_on_grid(a.float(), m, grid, key_mask) for a, m in zip(attentions, modules)]
        per_head[name] = np.stack([p[:, :rows, :cols].cpu().numpy() for p, _ in pairs])
        means[name] = np.stack([m[:rows, :cols].cpu().numpy() for _, m in pairs])
    student = torch.stack(outputs.interaction_maps)[:, 0].float()  # [layers, rows, cols] of the padded grid

    analysis = ImageAnalysis(
        image=image,
        title=title,
        layers=layers,
        original=per_head["original"],
        interaction=per_head["interaction"],
        fused=per_head["fused"],
        original_mean=means["original"],
        interaction_mean=means["interaction"],
        fused_mean=means["fused"],
        student=student[:, :rows, :cols].cpu().numpy(),
        gates=torch.stack(outputs.gates)[:, 0].float().cpu().numpy(),
        prediction=predict(model, processor, outputs, image),
        teacher=teacher,
        mask=None if mask is None else np.asarray(mask),
    )
    if baseline is not None:
        baseline_processor = baseline_processor or processor
        baseline_inputs = baseline_processor(images=[image], return_tensors="pt").to(baseline.device)
        analysis.baseline_prediction = predict(baseline, baseline_processor, baseline(**baseline_inputs), image)
    if teacher is not None and teacher.valid and teacher.interaction_map is not None:
        teacher_map = torch.as_tensor(np.asarray(teacher.interaction_map, dtype=np.float32))[None]
        if grid_mask is not None:  # dense models: the teacher's map placed on the image's part of the padded grid
            teacher_map = place_teacher_maps(teacher_map, grid_mask)
        analysis.kl = [float(alignment_loss([s[None]], teacher_map)) for s in student]
    if analysis.mask is not None:
        metric = alignment_metric or metrics.load("interaction_alignment")
        references = [analysis.mask]

        def closeness(maps) -> list[dict[str, float]]:
            return [metric.compute(predictions=[m], references=references) for m in maps]

        analysis.mask_alignment = {
            "C_VFM": closeness(analysis.original_mean),
            "C_AGT": closeness(analysis.interaction_mean),
            "student map": closeness(analysis.student),
        }
        if teacher is not None and teacher.interaction_map is not None and teacher.valid:
            analysis.teacher_mask_alignment = metric.compute(
                predictions=[np.asarray(teacher.interaction_map, dtype=np.float32)], references=references
            )
    return analysis


@torch.no_grad()
def mean_gates(model, processor, images, batch_size: int = 8, progress=None) -> np.ndarray:
    """The gates of every interaction layer averaged over images and heads: [layers, 2 (mean, std over images),
    2 (g1, g2)] (paper Fig. 11). `progress(done, total)` is called after each batch."""
    per_image = []
    for start in range(0, len(images), batch_size):
        batch = [image.convert("RGB") for image in images[start : start + batch_size]]
        inputs = processor(images=batch, return_tensors="pt").to(model.device)
        gates = model(**inputs, output_interactions=True).gates  # per layer [batch, heads, 2]
        per_image.append(torch.stack(gates, dim=1).float().mean(dim=2))  # [batch, layers, 2]
        if progress is not None:
            progress(min(start + batch_size, len(images)), len(images))
    gates = torch.cat(per_image)
    spread = gates.std(dim=0) if len(gates) > 1 else torch.zeros_like(gates[0])
    return torch.stack([gates.mean(dim=0), spread], dim=1).cpu().numpy()


__all__ = [
    "ImageAnalysis",
    "Prediction",
    "TeacherMap",
    "analyse_image",
    "attention_on_grid",
    "eager_attention",
    "interaction_attention_modules",
    "mean_gates",
    "predict",
]
