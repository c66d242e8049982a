"""PyTorch I-DETR: a DETR whose encoder self-attention learns from interactions (paper Eq. 3-9, dense tasks), for
object detection and segmentation (paper Table 6).

Derived from `transformers.models.detr`: only the encoder self-attention of the interaction layers is new; backbone,
position embeddings, encoder, decoder, model, head and mask-head forwards and the Hungarian `loss_function` are
DETR's own. Relative imports stay inside this folder so that `register_for_auto_class` uploads working remote code.
"""

import os
from dataclasses import dataclass

import torch
from torch import nn
from transformers import DetrForObjectDetection, DetrForSegmentation, DetrModel
from transformers.models.detr.modeling_detr import (
    DetrEncoder,
    DetrEncoderLayer,
    DetrMaskHeadSmallConv,
    DetrMHAttentionMap,
    DetrMLPPredictionHead,
    DetrModelOutput,
    DetrObjectDetectionOutput,
    DetrPreTrainedModel,
    DetrSegmentationOutput,
    DetrSelfAttention,
)

from .configuration_idetr import IDetrConfig
from .conversion import InteractionModelMixin, convert_to_interaction_model, forward_with_interactions
from .interaction_attention import INTERACTION_RECORDERS, InteractionAttentionMixin


@dataclass
class IDetrModelOutput(DetrModelOutput):
    r"""
    interaction_maps (`tuple[torch.FloatTensor]`, *optional*, returned when `output_interactions=True`):
        Per interaction layer, the student map C_AGT on the backbone feature grid, `(batch_size, height, width)`:
        the mean over the query rows of real positions, heads averaged, zero on padding, summing to 1.
    gates (`tuple[torch.FloatTensor]`, *optional*, returned when `output_interactions=True`):
        Per interaction layer, the mean gates (g1, g2) of every head, `(batch_size, num_heads, 2)`.
    interaction_mask (`torch.BoolTensor`, *optional*, returned when `output_interactions=True`):
        `(batch_size, height, width)`, True on feature positions of real pixels (`pixel_mask` at feature size).
    original_attentions, interaction_attentions (`tuple[torch.FloatTensor]`, *optional*, returned when
    `output_interactions=True` and `output_attentions=True`, under `attn_implementation="eager"`):
        Per interaction layer, C_VFM (attention of the original queries, Eq. 3) and C_AGT (of the interaction queries,
        Eq. 4), `(batch_size, num_heads, queries, keys)`; the attentions output holds their gated mix C_F (Eq. 6).
    """

    interaction_maps: tuple[torch.FloatTensor, ...] | None = None
    gates: tuple[torch.FloatTensor, ...] | None = None
    interaction_mask: torch.BoolTensor | None = None
    original_attentions: tuple[torch.FloatTensor, ...] | None = None
    interaction_attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class IDetrObjectDetectionOutput(DetrObjectDetectionOutput):
    r"""
    interaction_maps, gates, interaction_mask, original_attentions, interaction_attentions: as in
    `IDetrModelOutput`.
    """

    interaction_maps: tuple[torch.FloatTensor, ...] | None = None
    gates: tuple[torch.FloatTensor, ...] | None = None
    interaction_mask: torch.BoolTensor | None = None
    original_attentions: tuple[torch.FloatTensor, ...] | None = None
    interaction_attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class IDetrSegmentationOutput(DetrSegmentationOutput):
    r"""
    interaction_maps, gates, interaction_mask, original_attentions, interaction_attentions: as in
    `IDetrModelOutput`.
    """

    interaction_maps: tuple[torch.FloatTensor, ...] | None = None
    gates: tuple[torch.FloatTensor, ...] | None = None
    interaction_mask: torch.BoolTensor | None = None
    original_attentions: tuple[torch.FloatTensor, ...] | None = None
    interaction_attentions: tuple[torch.FloatTensor, ...] | None = None


class DetrEncoderInteractionAttentionMixin(InteractionAttentionMixin):
    """The encoder self-attention of the DETR family (DETR, Conditional-DETR) plus interaction queries P'_q sharing
    the keys (Eq. 3-8); put it before the library's attention class. As in those encoders, the position embeddings
    are added to the input of the queries (both P_q and P'_q) and of the keys, not of the values. The student map is
    the mean over the query rows of real positions; padded keys (from the attention mask) get none."""

    uses_key_mask = True

    def __init__(self, config: IDetrConfig):
        super().__init__(config, config.d_model, config.encoder_attention_heads, dropout=config.attention_dropout)

    def forward(self, hidden_states, attention_mask=None, position_embeddings=None, **kwargs):
        query_key_input = hidden_states if position_embeddings is None else hidden_states + position_embeddings
        return self.interaction_attention(hidden_states, attention_mask, query_key_input, **kwargs)


class IDetrSelfAttention(DetrEncoderInteractionAttentionMixin, DetrSelfAttention):
    """DETR's encoder self-attention with interaction queries (`DetrEncoderInteractionAttentionMixin`)."""


class IDetrPreTrainedModel(InteractionModelMixin, DetrPreTrainedModel):
    config: IDetrConfig
    config_class = IDetrConfig
    _source_name = "DETR"
    _converter = "IDetrForObjectDetection.from_detr"


class TracedClampEncoderLayerMixin:
    """The DETR family's encoder layer (put it before the library's class), with its training-time clamp of non-finite
    activations applied unconditionally: the library's `if not torch.isfinite(hidden_states).all()` reads the data,
    which `torch.compile(fullgraph=True)` cannot trace, and the clamp changes no finite value (in float16, none below
    its largest minus 1000). Otherwise the parent's forward."""

    def forward(self, hidden_states, attention_mask, spatial_position_embeddings=None, **kwargs):
        residual = hidden_states
        hidden_states, _ = self.self_attn(
            hidden_states=hidden_states,
            attention_mask=attention_mask,
            position_embeddings=spatial_position_embeddings,
            **kwargs,
        )
        hidden_states = nn.functional.dropout(hidden_states, p=self.dropout, training=self.training)
        hidden_states = self.self_attn_layer_norm(residual + hidden_states)
        hidden_states = self.final_layer_norm(hidden_states + self.mlp(hidden_states))
        if self.training:
            clamp_value = torch.finfo(hidden_states.dtype).max - 1000
            hidden_states = torch.clamp(hidden_states, min=-clamp_value, max=clamp_value)
        return hidden_states


class IDetrEncoderLayer(TracedClampEncoderLayerMixin, DetrEncoderLayer):
    """DETR's encoder layer, traceable in training (`TracedClampEncoderLayerMixin`)."""


class IDetrEncoder(IDetrPreTrainedModel, DetrEncoder):
    _can_record_outputs = {**DetrEncoder._can_record_outputs, **INTERACTION_RECORDERS}

    def __init__(self, config: IDetrConfig):
        super().__init__(config)
        self.layers = nn.ModuleList([IDetrEncoderLayer(config) for _ in range(config.encoder_layers)])
        self._use_interaction_attention(self.layers, "self_attn", IDetrSelfAttention)
        self.post_init()


class FeatureGridInteractionsMixin:
    """The interaction fields of a DETR-family model whose forward runs the backbone and the encoder itself: the student
    maps on the backbone's feature grid and `interaction_mask`, read from the outputs of the submodules named by
    `_interaction_sources` (encoder, backbone); and clear errors for pixel inputs of the wrong shape."""

    _interaction_sources = ("encoder", "backbone")

    def _check_inputs(self, inputs: dict) -> None:
        super()._check_inputs(inputs)  # `InteractionModelMixin`: pixel_values of shape (batch, channels, h, w)
        pixel_values, pixel_mask = inputs.get("pixel_values"), inputs.get("pixel_mask")
        if pixel_values is not None and pixel_mask is not None and pixel_mask.shape != pixel_values[:, 0].shape:
            raise ValueError(
                f"pixel_mask must be (batch, height, width) = {tuple(pixel_values[:, 0].shape)}, got "
                f"{tuple(pixel_mask.shape)}."
            )

    def _interaction_fields(self, outputs: dict, inputs: dict, seen: dict) -> dict:
        """The student maps on the backbone's feature grid, and the feature-level mask of real pixels."""
        encoder_name, backbone_name = self._interaction_sources
        encoder, backbone = seen.get(encoder_name), seen.get(backbone_name)
        if encoder is None:  # `encoder_outputs` given: nothing recorded in this call
            return {}
        mask = backbone[-1][1] if backbone is not None else None
        if mask is None:  # `inputs_embeds`: DETR assumes a square feature map
            side = int(encoder.last_hidden_state.shape[1] ** 0.5)
            mask = torch.ones(encoder.last_hidden_state.shape[0], side, side, dtype=torch.bool)
        grid = mask.shape[-2:]
        attentions = {k: encoder[k] for k in ("original_attentions", "interaction_attentions") if k in encoder}
        return {
            "interaction_maps": tuple(m.unflatten(-1, grid) for m in encoder["interaction_maps"]),
            "gates": encoder["gates"],
            "interaction_mask": mask.bool(),
            **attentions,
        }


class IDetrModel(FeatureGridInteractionsMixin, IDetrPreTrainedModel, DetrModel):
    """DETR's backbone, position embeddings and decoder around an `IDetrEncoder`."""

    def __init__(self, config: IDetrConfig):
        super().__init__(config)
        self.encoder = IDetrEncoder(config)
        self.post_init()

    forward = forward_with_interactions(DetrModel.forward, IDetrModelOutput)


class IDetrForObjectDetection(IDetrPreTrainedModel, DetrForObjectDetection):
    _head_prefixes = ("class_labels_classifier.", "bbox_predictor.")
    _interaction_sources = ("model",)
    _source_classes = {DetrForObjectDetection: {"": ""}, DetrModel: {"": "model."}}
    _source_model_types = {"detr": (DetrForObjectDetection,)}

    def __init__(self, config: IDetrConfig):
        IDetrPreTrainedModel.__init__(self, config)
        self.model = IDetrModel(config)
        self.class_labels_classifier = nn.Linear(config.d_model, config.num_labels + 1)  # + "no object"
        self.bbox_predictor = DetrMLPPredictionHead(config.d_model, config.d_model, output_dim=4, num_layers=3)
        self.post_init()

    forward = forward_with_interactions(DetrForObjectDetection.forward, IDetrObjectDetectionOutput)

    def _check_inputs(self, inputs: dict) -> None:
        self.model._check_inputs(inputs)
        labels, pixel_values = inputs.get("labels"), inputs.get("pixel_values")
        if labels is not None:
            check_detection_labels(labels, pixel_values.shape[0], self.config.num_labels)

    @classmethod
    def from_detr(
        cls, detr: "DetrForObjectDetection | DetrModel | str | os.PathLike", **config_overrides
    ) -> "IDetrForObjectDetection":
        """Convert a DETR (model object, local folder or Hub repo id) into an I-DETR: every weight copied, each P'_q a
        copy of P_q, gates at g1 + g2 = 1 (step-0 outputs equal the DETR's), `freeze_backbone=True` unless
        overridden. A new `num_labels` (or a headless `DetrModel`) gets freshly initialised detection heads."""
        return convert_to_interaction_model(cls, detr, config_overrides, "from_detr")


class IDetrForSegmentation(FeatureGridInteractionsMixin, IDetrPreTrainedModel, DetrForSegmentation):
    """DETR's segmentation model (an I-DETR detector, the multi-head attention map of every object query over the
    encoder memory and the FPN mask head) with interaction queries in the encoder self-attention (paper Table 6).
    With `freeze_backbone`, interaction queries, gates, detection heads and the mask head train."""

    # where its base model sits (DETR's "model" names no submodule of the segmentation model), so that it loads from
    # an `IDetrModel`'s weights and `IDetrModel` from its own
    base_model_prefix = "detr.model"
    _head_prefixes = ("detr.class_labels_classifier.", "detr.bbox_predictor.", "bbox_attention.", "mask_head.")
    _interaction_sources = ("detr.model.encoder", "detr.model.backbone")
    _converter = "IDetrForSegmentation.from_detr"
    _source_classes = {
        DetrForSegmentation: {"": ""},
        DetrForObjectDetection: {"": "detr."},
        DetrModel: {"": "detr.model."},
    }
    _source_model_types = {"detr": (DetrForSegmentation, DetrForObjectDetection)}

    def __init__(self, config: IDetrConfig):
        IDetrPreTrainedModel.__init__(self, config)
        self.detr = IDetrForObjectDetection(config)
        hidden_size, num_heads = config.d_model, config.encoder_attention_heads
        self.mask_head = DetrMaskHeadSmallConv(
            input_channels=hidden_size + num_heads,
            fpn_channels=self.detr.model.backbone.intermediate_channel_sizes[::-1][-3:],
            hidden_size=hidden_size,
            activation_function=config.activation_function,
        )
        self.bbox_attention = DetrMHAttentionMap(hidden_size, num_heads, dropout=0.0)
        self.post_init()

    forward = forward_with_interactions(DetrForSegmentation.forward, IDetrSegmentationOutput)

    def _check_inputs(self, inputs: dict) -> None:
        super()._check_inputs(inputs)
        if inputs.get("inputs_embeds") is not None:
            raise ValueError("Segmentation needs pixel_values: the mask head reads the backbone's feature maps.")
        labels, pixel_values = inputs.get("labels"), inputs.get("pixel_values")
        if labels is not None:
            check_detection_labels(labels, pixel_values.shape[0], self.config.num_labels)
            check_mask_labels(labels, pixel_values, inputs.get("pixel_mask"))

    @classmethod
    def from_detr(
        cls, detr: "DetrForSegmentation | DetrForObjectDetection | str | os.PathLike", **config_overrides
    ) -> "IDetrForSegmentation":
        """Convert a DETR segmentation model (model object, local folder or Hub repo id, e.g.
        `facebook/detr-resnet-50-panoptic`) into an I-DETR one, as `IDetrForObjectDetection.from_detr` does. A
        `DetrForObjectDetection` gives a freshly initialised mask head (DETR's recipe: train it on the detector)."""
        return convert_to_interaction_model(cls, detr, config_overrides, "from_detr")


def check_detection_labels(labels: list[dict], batch_size: int, num_labels: int) -> None:
    """Clear errors for targets DETR's loss would mis-handle silently or with an obscure message."""
    if not isinstance(labels, (list, tuple)):
        raise ValueError(
            f"labels must be a list with one target dict per image, got {type(labels).__name__} (wrap a single "
            "image's dict in a list)."
        )
    if len(labels) != batch_size:
        raise ValueError(f"Got {len(labels)} target dicts for a batch of {batch_size} images.")
    for i, target in enumerate(labels):
        missing = {"class_labels", "boxes"} - set(target)
        if missing:
            raise ValueError(f"Target {i} lacks {sorted(missing)} (expected 'class_labels' and 'boxes').")
        classes, boxes = target["class_labels"], target["boxes"]
        if not isinstance(classes, torch.Tensor) or classes.is_floating_point() or classes.ndim != 1:
            raise ValueError(
                f"Target {i}: class_labels must be a 1-d tensor of integer class ids, got "
                f"{getattr(classes, 'dtype', type(classes).__name__)} of shape {tuple(getattr(classes, 'shape', ()))}."
            )
        if not isinstance(boxes, torch.Tensor) or not boxes.is_floating_point():
            raise ValueError(f"Target {i}: boxes must be a float tensor of normalised (cx, cy, w, h).")
        if boxes.ndim != 2 or boxes.shape[-1] != 4 or len(boxes) != len(classes):
            raise ValueError(
                f"Target {i}: boxes must be (num_boxes, 4) with one class each, got {tuple(boxes.shape)} for "
                f"{len(classes)} classes."
            )
        if len(classes) and ((classes < 0) | (classes >= num_labels)).any():
            raise ValueError(f"Target {i} has category ids {sorted(set(classes.tolist()))} outside [0, {num_labels}).")
        if len(boxes) and not boxes.isfinite().all():
            raise ValueError(f"Target {i} has NaN or infinite box coordinates.")
        if len(boxes) and ((boxes < 0) | (boxes > 1)).any():
            raise ValueError(f"Target {i} has boxes outside the image: normalised (cx, cy, w, h) must lie in [0, 1].")


def check_mask_labels(labels: list[dict], pixel_values: torch.Tensor, pixel_mask: torch.Tensor | None) -> None:
    """Segmentation targets: one non-empty mask per box, at the size of its image. The loss pads the masks at the
    bottom/right to the largest of the batch and compares them with the predicted masks of the padded batch, so each
    mask must cover its image's real pixels (`pixel_mask`) and the largest must be the batch's size."""
    height, width = pixel_values.shape[-2:]
    sizes = []
    for i, target in enumerate(labels):
        masks = target.get("masks")
        if masks is None:
            raise ValueError(f"Target {i} lacks 'masks' (num_boxes, height, width): segmentation needs one per box.")
        if masks.ndim != 3 or len(masks) != len(target["boxes"]):
            raise ValueError(
                f"Target {i}: masks must be (num_boxes, height, width) with one mask per box, got "
                f"{tuple(masks.shape)} for {len(target['boxes'])} boxes."
            )
        mask_height, mask_width = masks.shape[-2:]
        real_height, real_width = height, width
        if pixel_mask is not None:
            real_height, real_width = int(pixel_mask[i].any(1).sum()), int(pixel_mask[i].any(0).sum())
        if not (real_height <= mask_height <= height and real_width <= mask_width <= width):
            raise ValueError(
                f"Target {i}: masks of size {mask_height}x{mask_width} do not fit its image: they must cover its "
                f"{real_height}x{real_width} real pixels within the {height}x{width} batch (resize the masks with the image)."
            )
        empty = [j for j, mask in enumerate(masks) if not mask.any()]
        if empty:
            raise ValueError(f"Target {i}: masks {empty} are empty (no object pixel); drop those objects or fix them.")
        sizes.append((mask_height, mask_width))
    if sizes and (max(h for h, _ in sizes) != height or max(w for _, w in sizes) != width):
        raise ValueError(
            f"The largest target masks ({max(h for h, _ in sizes)}x{max(w for _, w in sizes)}) are smaller than the "
            f"{height}x{width} batch: the loss would stretch the predicted masks of the padded batch onto them."
        )


__all__ = [
    "DetrEncoderInteractionAttentionMixin",
    "FeatureGridInteractionsMixin",
    "IDetrEncoder",
    "IDetrForObjectDetection",
    "IDetrForSegmentation",
    "IDetrModel",
    "IDetrModelOutput",
    "IDetrObjectDetectionOutput",
    "IDetrPreTrainedModel",
    "IDetrSegmentationOutput",
    "check_detection_labels",
    "check_mask_labels",
]
