"""PyTorch I-DETR: a DETR whose encoder self-attention learns from interactions (paper Eq. 3-9, dense tasks).

Derived from `transformers.models.detr`: backbone, position embeddings, decoder, heads and the Hungarian
`loss_function` are DETR's own; only the encoder layers with interaction queries and the outputs change.
Relative imports stay inside this folder so that `register_for_auto_class` uploads working remote code.
"""

import os
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoConfig, DetrForObjectDetection, DetrModel
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_outputs import BaseModelOutput
from transformers.models.detr.modeling_detr import (
    DetrEncoder,
    DetrEncoderLayer,
    DetrMLPPredictionHead,
    DetrModelOutput,
    DetrObjectDetectionOutput,
    DetrPreTrainedModel,
    DetrSelfAttention,
)
from transformers.utils.generic import can_return_tuple, merge_with_config_defaults
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .configuration_idetr import IDetrConfig
from .conversion import InteractionModelMixin, init_interaction_queries_from_original, load_source_weights
from .interaction_attention import build_gate, interaction_attention_forward


@dataclass
class IDetrEncoderOutput(BaseModelOutput):
    r"""
    interaction_maps (`tuple[torch.FloatTensor]`, *optional*):
        Per interaction layer, the student map over the flattened feature grid, `(batch_size, sequence_length)`.
    gates (`tuple[torch.FloatTensor]`, *optional*):
        Per interaction layer, the mean gates (g1, g2) of every head, `(batch_size, num_heads, 2)`.
    """

    interaction_maps: tuple[torch.FloatTensor, ...] | None = None
    gates: tuple[torch.FloatTensor, ...] | None = None


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
    """

    interaction_maps: tuple[torch.FloatTensor, ...] | None = None
    gates: tuple[torch.FloatTensor, ...] | None = None
    interaction_mask: torch.BoolTensor | None = None


@dataclass
class IDetrObjectDetectionOutput(DetrObjectDetectionOutput):
    r"""
    interaction_maps, gates, interaction_mask: as in `IDetrModelOutput` (returned when `output_interactions=True`).
    """

    interaction_maps: tuple[torch.FloatTensor, ...] | None = None
    gates: tuple[torch.FloatTensor, ...] | None = None
    interaction_mask: torch.BoolTensor | None = None


class IDetrSelfAttention(DetrSelfAttention):
    """DETR encoder self-attention plus interaction queries P'_q sharing the keys (Eq. 3-8). As in DETR, the position
    embeddings are added to the input of the queries (both P_q and P'_q) and of the keys, not of the values."""

    def __init__(self, config: IDetrConfig):
        super().__init__(config, config.d_model, config.encoder_attention_heads, dropout=config.attention_dropout)
        self.interaction_q_proj = nn.Linear(config.d_model, config.d_model)
        self.gate = build_gate(
            config.gate_granularity,
            config.gate_form,
            config.encoder_attention_heads,
            config.gate_hidden_size,
            config.gate_init_bias,
            config.gate_input_scale,
            config.d_model,
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: torch.Tensor | None = None,
        key_mask: torch.Tensor | None = None,
        output_interactions: bool = False,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """Returns the projected output, C_F (if attentions are recorded), and (if `output_interactions`) the
        student map over the keys (real positions per `key_mask`) and the mean gates."""
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        query_key_input = hidden_states + position_embeddings if position_embeddings is not None else hidden_states
        query_states = self.q_proj(query_key_input).view(hidden_shape).transpose(1, 2)
        interaction_query_states = self.interaction_q_proj(query_key_input).view(hidden_shape).transpose(1, 2)
        key_states = self.k_proj(query_key_input).view(hidden_shape).transpose(1, 2)
        value_states = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)

        attn_output, fused, student_map, gate_means = interaction_attention_forward(
            self,
            query_states,
            interaction_query_states,
            key_states,
            value_states,
            attention_mask,
            scaling=self.scaling,
            dropout=0.0 if not self.training else self.attention_dropout,
            student_map_reduction="mean" if output_interactions else None,
            return_attention_weights=kwargs.get("output_attentions", self.config.output_attentions),
            key_mask=key_mask,
            gate_states=hidden_states,
        )
        attn_output = self.o_proj(attn_output.reshape(*input_shape, -1))
        return attn_output, fused, student_map, gate_means


class IDetrEncoderLayer(DetrEncoderLayer):
    """A DETR encoder layer whose self-attention is `IDetrSelfAttention` when the layer carries interaction queries."""

    def __init__(self, config: IDetrConfig, has_interaction_queries: bool):
        super().__init__(config)
        if has_interaction_queries:
            self.self_attn = IDetrSelfAttention(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        spatial_position_embeddings: torch.Tensor | None = None,
        key_mask: torch.Tensor | None = None,
        output_interactions: bool = False,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """DETR's post-norm encoder layer; also returns the student map and mean gates (None unless asked)."""
        student_map = gate_means = None
        if isinstance(self.self_attn, IDetrSelfAttention):
            attention_output, _, student_map, gate_means = self.self_attn(
                hidden_states, attention_mask, spatial_position_embeddings, key_mask, output_interactions, **kwargs
            )
        else:
            attention_output, _ = self.self_attn(
                hidden_states=hidden_states, attention_mask=attention_mask,
                position_embeddings=spatial_position_embeddings, **kwargs,
            )  # fmt: skip
        hidden_states = hidden_states + nn.functional.dropout(attention_output, p=self.dropout, training=self.training)
        hidden_states = self.self_attn_layer_norm(hidden_states)
        hidden_states = self.final_layer_norm(hidden_states + self.mlp(hidden_states))
        if self.training and not torch.isfinite(hidden_states).all():
            clamp_value = torch.finfo(hidden_states.dtype).max - 1000
            hidden_states = torch.clamp(hidden_states, min=-clamp_value, max=clamp_value)
        return hidden_states, student_map, gate_means


class IDetrPreTrainedModel(InteractionModelMixin, DetrPreTrainedModel):
    config: IDetrConfig
    config_class = IDetrConfig
    _no_split_modules = [r"DetrConvEncoder", r"IDetrEncoderLayer", r"DetrDecoderLayer"]
    _source_name = "DETR"
    _converter = "IDetrForObjectDetection.from_detr"


class IDetrEncoder(IDetrPreTrainedModel, DetrEncoder):
    _can_record_outputs = {
        "hidden_states": OutputRecorder(IDetrEncoderLayer, index=0),
        "attentions": OutputRecorder(DetrSelfAttention, index=1),
    }

    def __init__(self, config: IDetrConfig):
        IDetrPreTrainedModel.__init__(self, config)
        self.dropout = config.dropout
        interaction_layers = set(config.interaction_layer_indices)
        self.layers = nn.ModuleList([IDetrEncoderLayer(config, i in interaction_layers) for i in range(config.encoder_layers)])
        self.post_init()

    @merge_with_config_defaults
    @capture_outputs
    def forward(
        self,
        inputs_embeds=None,
        attention_mask=None,
        spatial_position_embeddings=None,
        output_interactions: bool = False,
        **kwargs,
    ) -> IDetrEncoderOutput:
        r"""
        attention_mask (`torch.Tensor` of shape `(batch_size, sequence_length)`): 1 for real feature positions,
            0 for padding; padding is masked in attention and left out of the student maps.
        output_interactions (`bool`): return the per-layer student maps and mean gates.
        """
        hidden_states = nn.functional.dropout(inputs_embeds, p=self.dropout, training=self.training)
        key_mask = attention_mask.bool() if attention_mask is not None else None
        attention_mask = create_bidirectional_mask(config=self.config, inputs_embeds=inputs_embeds, attention_mask=attention_mask)
        interaction_maps, gates = [], []
        for encoder_layer in self.layers:
            hidden_states, student_map, gate_means = encoder_layer(
                hidden_states, attention_mask, spatial_position_embeddings, key_mask, bool(output_interactions), **kwargs
            )
            if student_map is not None:
                interaction_maps.append(student_map)
                gates.append(gate_means)
        return IDetrEncoderOutput(
            last_hidden_state=hidden_states,
            interaction_maps=tuple(interaction_maps) if output_interactions else None,
            gates=tuple(gates) if output_interactions else None,
        )


class IDetrModel(IDetrPreTrainedModel, DetrModel):
    """DETR's backbone, position embeddings and decoder around an `IDetrEncoder`."""

    def __init__(self, config: IDetrConfig):
        DetrModel.__init__(self, config)
        self.encoder = IDetrEncoder(config)
        self.post_init()
        self._apply_freezing()

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        pixel_mask: torch.LongTensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        output_interactions: bool | None = None,
        **kwargs,
    ) -> IDetrModelOutput:
        r"""
        pixel_mask (`torch.LongTensor` of shape `(batch_size, height, width)`, *optional*):
            1 for real pixels, 0 for padding (as `DetrImageProcessor` returns).
        output_interactions (`bool`, *optional*):
            Return the per-layer student maps on the feature grid, the mean gates and the feature-level mask.
        """
        if pixel_values is None or pixel_values.ndim != 4:
            shape = None if pixel_values is None else tuple(pixel_values.shape)
            raise ValueError(f"I-DETR needs pixel_values of shape (batch, channels, height, width), got {shape}.")
        batch_size, _, height, width = pixel_values.shape
        if pixel_mask is None:
            pixel_mask = torch.ones((batch_size, height, width), dtype=torch.long, device=pixel_values.device)
        elif pixel_mask.shape != (batch_size, height, width):
            raise ValueError(f"pixel_mask must be (batch, height, width) = {(batch_size, height, width)}, got {tuple(pixel_mask.shape)}.")
        feature_map, mask = self.backbone(pixel_values, pixel_mask)[-1]
        flattened_features = self.input_projection(feature_map).flatten(2).transpose(1, 2)
        spatial_position_embeddings = (
            self.position_embedding(shape=feature_map.shape, device=pixel_values.device, dtype=pixel_values.dtype, mask=mask)
            .flatten(2)
            .transpose(1, 2)
        )
        flattened_mask = mask.flatten(1)
        encoder_outputs = self.encoder(
            inputs_embeds=flattened_features,
            attention_mask=flattened_mask,
            spatial_position_embeddings=spatial_position_embeddings,
            output_interactions=output_interactions,
            **kwargs,
        )
        object_queries_position_embeddings = self.query_position_embeddings.weight.unsqueeze(0).repeat(batch_size, 1, 1)
        decoder_outputs = self.decoder(
            inputs_embeds=torch.zeros_like(object_queries_position_embeddings),
            attention_mask=decoder_attention_mask,
            spatial_position_embeddings=spatial_position_embeddings,
            object_queries_position_embeddings=object_queries_position_embeddings,
            encoder_hidden_states=encoder_outputs.last_hidden_state,
            encoder_attention_mask=flattened_mask,
            **kwargs,
        )
        grid = feature_map.shape[-2:]
        return IDetrModelOutput(
            last_hidden_state=decoder_outputs.last_hidden_state,
            decoder_hidden_states=decoder_outputs.hidden_states,
            decoder_attentions=decoder_outputs.attentions,
            cross_attentions=decoder_outputs.cross_attentions,
            encoder_last_hidden_state=encoder_outputs.last_hidden_state,
            encoder_hidden_states=encoder_outputs.hidden_states,
            encoder_attentions=encoder_outputs.attentions,
            intermediate_hidden_states=decoder_outputs.intermediate_hidden_states,
            interaction_maps=tuple(m.unflatten(-1, grid) for m in encoder_outputs.interaction_maps) if output_interactions else None,
            gates=encoder_outputs.gates if output_interactions else None,
            interaction_mask=mask.bool() if output_interactions else None,
        )


class IDetrForObjectDetection(IDetrPreTrainedModel, DetrForObjectDetection):
    _head_prefixes = ("class_labels_classifier.", "bbox_predictor.")

    def __init__(self, config: IDetrConfig):
        IDetrPreTrainedModel.__init__(self, config)
        self.model = IDetrModel(config)
        self.class_labels_classifier = nn.Linear(config.d_model, config.num_labels + 1)  # + "no object"
        self.bbox_predictor = DetrMLPPredictionHead(input_dim=config.d_model, hidden_dim=config.d_model, output_dim=4, num_layers=3)
        self.post_init()
        self._apply_freezing()

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        pixel_mask: torch.LongTensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        labels: list[dict] | None = None,
        output_interactions: bool | None = None,
        **kwargs,
    ) -> IDetrObjectDetectionOutput:
        r"""
        labels (`list[dict]`, *optional*):
            Per image, `class_labels` (`(num_boxes,)` ids in `[0, num_labels)`) and `boxes` (`(num_boxes, 4)`,
            normalised center x, center y, width, height); DETR's Hungarian loss, unchanged. Empty targets train.
        output_interactions (`bool`, *optional*):
            Return the per-layer student maps, mean gates and the feature-level mask.
        """
        if labels is not None:
            _check_detection_labels(labels, pixel_values.shape[0], self.config.num_labels)
        outputs: IDetrModelOutput = self.model(
            pixel_values, pixel_mask=pixel_mask, decoder_attention_mask=decoder_attention_mask,
            output_interactions=output_interactions, **kwargs,
        )  # fmt: skip
        sequence_output = outputs.last_hidden_state
        logits = self.class_labels_classifier(sequence_output)
        pred_boxes = self.bbox_predictor(sequence_output).sigmoid()
        loss = loss_dict = auxiliary_outputs = None
        if labels is not None:
            outputs_class = outputs_coord = None
            if self.config.auxiliary_loss:
                outputs_class = self.class_labels_classifier(outputs.intermediate_hidden_states)
                outputs_coord = self.bbox_predictor(outputs.intermediate_hidden_states).sigmoid()
            loss, loss_dict, auxiliary_outputs = self.loss_function(
                logits, labels, self.device, pred_boxes, self.config, outputs_class, outputs_coord
            )
        return IDetrObjectDetectionOutput(
            loss=loss,
            loss_dict=loss_dict,
            logits=logits,
            pred_boxes=pred_boxes,
            auxiliary_outputs=auxiliary_outputs,
            last_hidden_state=outputs.last_hidden_state,
            decoder_hidden_states=outputs.decoder_hidden_states,
            decoder_attentions=outputs.decoder_attentions,
            cross_attentions=outputs.cross_attentions,
            encoder_last_hidden_state=outputs.encoder_last_hidden_state,
            encoder_hidden_states=outputs.encoder_hidden_states,
            encoder_attentions=outputs.encoder_attentions,
            interaction_maps=outputs.interaction_maps,
            gates=outputs.gates,
            interaction_mask=outputs.interaction_mask,
        )

    @classmethod
    def from_detr(
        cls, detr: "DetrForObjectDetection | DetrModel | str | os.PathLike", **config_overrides
    ) -> "IDetrForObjectDetection":
        """Convert a DETR (model object, local folder or Hub repo id) into an I-DETR: every weight copied, each P'_q a
        copy of P_q, gates at g1 + g2 = 1 (step-0 outputs equal the DETR's), `freeze_backbone=True` unless
        overridden. A new `num_labels` (or a headless `DetrModel`) gets freshly initialised detection heads."""
        if isinstance(detr, (str, os.PathLike)):
            source_type = AutoConfig.from_pretrained(detr).model_type
            if source_type != "detr":
                raise ValueError(f"from_detr expects a DETR checkpoint (model_type 'detr'), got model_type {source_type!r} at {detr}.")
            detr = DetrForObjectDetection.from_pretrained(detr)
        if type(detr) not in (DetrForObjectDetection, DetrModel):
            raise ValueError(f"from_detr expects a DetrForObjectDetection or DetrModel, got {type(detr).__name__}.")
        source = detr.config.to_dict()
        for key in ("model_type", "architectures", "transformers_version", "auto_map", "dtype"):
            source.pop(key, None)
        if "num_labels" in config_overrides or "id2label" in config_overrides:
            source.pop("id2label", None)
            source.pop("label2id", None)
        config = IDetrConfig(**{**source, "freeze_backbone": True, **config_overrides})
        config._name_or_path = detr.config._name_or_path

        model = cls(config)
        full = isinstance(detr, DetrForObjectDetection)
        state_dict = {(name if full else f"model.{name}"): tensor for name, tensor in detr.state_dict().items()}
        heads_reused = full and detr.config.num_labels == config.num_labels
        if not heads_reused:
            state_dict = {name: t for name, t in state_dict.items() if not name.startswith(cls._head_prefixes)}
        load_source_weights(model, state_dict, newly_initialised=() if heads_reused else cls._head_prefixes)
        init_interaction_queries_from_original(model)
        return model.to(dtype=next(detr.parameters()).dtype)


def _check_detection_labels(labels: list[dict], batch_size: int, num_labels: int) -> None:
    """Clear errors for targets DETR's loss would mis-handle silently or with an obscure message."""
    if len(labels) != batch_size:
        raise ValueError(f"Got {len(labels)} target dicts for a batch of {batch_size} images.")
    for i, target in enumerate(labels):
        missing = {"class_labels", "boxes"} - set(target)
        if missing:
            raise ValueError(f"Target {i} lacks {sorted(missing)} (expected 'class_labels' and 'boxes').")
        classes, boxes = target["class_labels"], target["boxes"]
        if boxes.ndim != 2 or boxes.shape[-1] != 4 or len(boxes) != len(classes):
            raise ValueError(f"Target {i}: boxes must be (num_boxes, 4) with one class each, got {tuple(boxes.shape)} for {len(classes)} classes.")
        if len(classes) and ((classes < 0) | (classes >= num_labels)).any():
            raise ValueError(f"Target {i} has category ids {sorted(set(classes.tolist()))} outside [0, {num_labels}).")
        if len(boxes) and ((boxes < 0) | (boxes > 1)).any():
            raise ValueError(f"Target {i} has boxes outside the image: normalised (cx, cy, w, h) must lie in [0, 1].")


__all__ = [
    "IDetrEncoder",
    "IDetrForObjectDetection",
    "IDetrModel",
    "IDetrModelOutput",
    "IDetrObjectDetectionOutput",
    "IDetrPreTrainedModel",
]
