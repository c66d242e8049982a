"""PyTorch I-Conditional-DETR: a Conditional-DETR whose encoder self-attention learns from interactions (paper Eq. 3-9;
few-shot detection, Table 7).

Derived from `transformers.models.conditional_detr` with the DETR family's interaction attention and feature-grid
fields of `modeling_idetr`: only the encoder self-attention of the interaction layers is new; backbone, position
embeddings, encoder, conditional decoder, model and head forwards and the focal-loss `loss_function` are
Conditional-DETR's own. Relative imports stay inside this folder so that remote code works.
"""

import os
from dataclasses import dataclass

import torch
from torch import nn
from transformers import ConditionalDetrForObjectDetection, ConditionalDetrModel
from transformers.models.conditional_detr.modeling_conditional_detr import (
    ConditionalDetrEncoder,
    ConditionalDetrEncoderLayer,
    ConditionalDetrMLPPredictionHead,
    ConditionalDetrModelOutput,
    ConditionalDetrObjectDetectionOutput,
    ConditionalDetrPreTrainedModel,
    ConditionalDetrSelfAttention,
)

from .configuration_iconditional_detr import IConditionalDetrConfig
from .conversion import InteractionModelMixin, convert_to_interaction_model, forward_with_interactions
from .interaction_attention import INTERACTION_RECORDERS
from .modeling_idetr import (
    DetrEncoderInteractionAttentionMixin,
    FeatureGridInteractionsMixin,
    TracedClampEncoderLayerMixin,
    check_detection_labels,
)


@dataclass
class IConditionalDetrModelOutput(ConditionalDetrModelOutput):
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
class IConditionalDetrObjectDetectionOutput(ConditionalDetrObjectDetectionOutput):
    r"""
    interaction_maps, gates, interaction_mask, original_attentions, interaction_attentions: as in
    `IConditionalDetrModelOutput`.
    """

    interaction_maps: tuple[torch.FloatTensor, ...] | None = None
    gates: tuple[torch.FloatTensor, ...] | None = None
    interaction_mask: torch.BoolTensor | None = None
    original_attentions: tuple[torch.FloatTensor, ...] | None = None
    interaction_attentions: tuple[torch.FloatTensor, ...] | None = None


class IConditionalDetrSelfAttention(DetrEncoderInteractionAttentionMixin, ConditionalDetrSelfAttention):
    """Conditional-DETR's encoder self-attention with interaction queries: P_q, P'_q and P_k read content + position."""


class IConditionalDetrEncoderLayer(TracedClampEncoderLayerMixin, ConditionalDetrEncoderLayer):
    """Conditional-DETR's encoder layer, traceable in training (`TracedClampEncoderLayerMixin`)."""


class IConditionalDetrPreTrainedModel(InteractionModelMixin, ConditionalDetrPreTrainedModel):
    config: IConditionalDetrConfig
    config_class = IConditionalDetrConfig
    _source_name = "Conditional-DETR"
    _converter = "IConditionalDetrForObjectDetection.from_conditional_detr"


class IConditionalDetrEncoder(IConditionalDetrPreTrainedModel, ConditionalDetrEncoder):
    _can_record_outputs = {**ConditionalDetrEncoder._can_record_outputs, **INTERACTION_RECORDERS}

    def __init__(self, config: IConditionalDetrConfig):
        super().__init__(config)
        self.layers = nn.ModuleList([IConditionalDetrEncoderLayer(config) for _ in range(config.encoder_layers)])
        self._use_interaction_attention(self.layers, "self_attn", IConditionalDetrSelfAttention)
        self.post_init()


class IConditionalDetrModel(FeatureGridInteractionsMixin, IConditionalDetrPreTrainedModel, ConditionalDetrModel):
    """Conditional-DETR's backbone, position embeddings and conditional decoder around an `IConditionalDetrEncoder`."""

    def __init__(self, config: IConditionalDetrConfig):
        super().__init__(config)
        self.encoder = IConditionalDetrEncoder(config)
        self.post_init()

    forward = forward_with_interactions(ConditionalDetrModel.forward, IConditionalDetrModelOutput)


class IConditionalDetrForObjectDetection(IConditionalDetrPreTrainedModel, ConditionalDetrForObjectDetection):
    _head_prefixes = ("class_labels_classifier.", "bbox_predictor.")
    _interaction_sources = ("model",)
    _source_classes = {ConditionalDetrForObjectDetection: {"": ""}, ConditionalDetrModel: {"": "model."}}
    _source_model_types = {"conditional_detr": (ConditionalDetrForObjectDetection,)}

    def __init__(self, config: IConditionalDetrConfig):
        IConditionalDetrPreTrainedModel.__init__(self, config)
        self.model = IConditionalDetrModel(config)
        self.class_labels_classifier = nn.Linear(
            config.d_model, config.num_labels
        )  # sigmoid focal loss: no "no object"
        self.bbox_predictor = ConditionalDetrMLPPredictionHead(
            input_dim=config.d_model, hidden_dim=config.d_model, output_dim=4, num_layers=3
        )
        self.post_init()

    forward = forward_with_interactions(
        ConditionalDetrForObjectDetection.forward, IConditionalDetrObjectDetectionOutput
    )

    def _check_inputs(self, inputs: dict) -> None:
        self.model._check_inputs(inputs)
        labels, pixel_values = inputs.get("labels"), inputs.get("pixel_values")
        if labels is not None:
            check_detection_labels(labels, pixel_values.shape[0], self.config.num_labels)

    @classmethod
    def from_conditional_detr(
        cls,
        conditional_detr: "ConditionalDetrForObjectDetection | ConditionalDetrModel | str | os.PathLike",
        **config_overrides,
    ) -> "IConditionalDetrForObjectDetection":
        """Convert a Conditional-DETR (model object, local folder or Hub repo id, e.g.
        `microsoft/conditional-detr-resnet-50`) into an I-Conditional-DETR: every weight copied, each P'_q a copy of
        P_q, gates at g1 + g2 = 1 (step-0 outputs equal the source's), `freeze_backbone=True` unless overridden. A new
        `num_labels` (or a headless `ConditionalDetrModel`) gets freshly initialised detection heads."""
        return convert_to_interaction_model(cls, conditional_detr, config_overrides, "from_conditional_detr")


__all__ = [
    "IConditionalDetrEncoder",
    "IConditionalDetrForObjectDetection",
    "IConditionalDetrModel",
    "IConditionalDetrModelOutput",
    "IConditionalDetrObjectDetectionOutput",
    "IConditionalDetrPreTrainedModel",
]
