"""PyTorch I-ViT: a ViT whose attention layers learn from interactions (paper Eq. 3-9).

Derived from `transformers.models.vit` the way `ijepa`/`deit` derive from it: embeddings, MLP, layer norms, head
and loss are ViT's own; only the attention of the interaction layers and the outputs change.
Relative imports stay inside this folder so that `register_for_auto_class` uploads working remote code.
"""

import os
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoConfig, ViTForImageClassification, ViTModel
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_outputs import BaseModelOutputWithPooling, ImageClassifierOutput
from transformers.models.vit.modeling_vit import (
    ViTAttention,
    ViTEmbeddings,
    ViTLayer,
    ViTPooler,
    ViTPreTrainedModel,
)
from transformers.utils.generic import can_return_tuple, merge_with_config_defaults
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .configuration_ivit import IViTConfig
from .conversion import InteractionModelMixin, init_interaction_queries_from_original, load_source_weights
from .interaction_attention import build_gate, interaction_attention_forward


@dataclass
class IViTModelOutput(BaseModelOutputWithPooling):
    r"""
    interaction_maps (`tuple[torch.FloatTensor]`, *optional*, returned when `output_interactions=True`):
        One student map per interaction layer (in `config.interaction_layer_indices` order): C_AGT reduced to a
        distribution over patches (`config.interaction_map_reduction`), shape `(batch_size, grid_height, grid_width)`.
    gates (`tuple[torch.FloatTensor]`, *optional*, returned when `output_interactions=True`):
        One tensor per interaction layer with the mean gates (g1 for C_AGT, g2 for C_VFM) of every head,
        shape `(batch_size, num_heads, 2)`.
    """

    interaction_maps: tuple[torch.FloatTensor, ...] | None = None
    gates: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class IViTImageClassifierOutput(ImageClassifierOutput):
    r"""
    interaction_maps (`tuple[torch.FloatTensor]`, *optional*, returned when `output_interactions=True`):
        Per interaction layer, the student map over patches, shape `(batch_size, grid_height, grid_width)`.
    gates (`tuple[torch.FloatTensor]`, *optional*, returned when `output_interactions=True`):
        Per interaction layer, the mean gates (g1, g2) of every head, shape `(batch_size, num_heads, 2)`.
    """

    interaction_maps: tuple[torch.FloatTensor, ...] | None = None
    gates: tuple[torch.FloatTensor, ...] | None = None


class IViTAttention(ViTAttention):
    """ViT attention plus interaction queries P'_q sharing the keys, mixed by a gated control network (Eq. 3-8).

    Its probabilities are needed, so it never uses fused SDPA; layers without interaction queries keep it.
    """

    def __init__(self, config: IViTConfig):
        super().__init__(config)
        self.interaction_q_proj = nn.Linear(
            config.hidden_size, config.num_attention_heads * self.head_dim, bias=config.qkv_bias
        )
        self.gate = build_gate(
            config.gate_granularity,
            config.gate_form,
            config.num_attention_heads,
            config.gate_hidden_size,
            config.gate_init_bias,
            config.gate_input_scale,
            config.hidden_size,
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_interactions: bool = False,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Returns the projected output, C_F, and (if `output_interactions`) the student map and mean gates."""
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        query_states = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        interaction_query_states = self.interaction_q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        key_states = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
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
            student_map_reduction=self.config.interaction_map_reduction if output_interactions else None,
            num_prefix_tokens=1,  # the CLS token
            return_attention_weights=kwargs.get("output_attentions", self.config.output_attentions),
            student_map_source=self.config.student_map_source,
            gate_states=hidden_states,
        )
        attn_output = self.o_proj(attn_output.reshape(*input_shape, -1))
        return attn_output, fused, student_map, gate_means


class IViTLayer(ViTLayer):
    """A ViT layer whose attention is `IViTAttention` when the layer carries interaction queries."""

    def __init__(self, config: IViTConfig, has_interaction_queries: bool):
        super().__init__(config)
        if has_interaction_queries:
            self.attention = IViTAttention(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_interactions: bool = False,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Returns the new hidden states, and the student map and mean gates (None unless an interaction layer
        asked for them)."""
        student_map = gate_means = None
        normed = self.layernorm_before(hidden_states)
        if isinstance(self.attention, IViTAttention):
            attention_output, _, student_map, gate_means = self.attention(
                normed, attention_mask, output_interactions=output_interactions, **kwargs
            )
        else:
            attention_output, _ = self.attention(normed, attention_mask, **kwargs)
        hidden_states = self.dropout(attention_output) + hidden_states
        hidden_states = self.dropout(self.mlp(self.layernorm_after(hidden_states))) + hidden_states
        return hidden_states, student_map, gate_means


class IViTPreTrainedModel(InteractionModelMixin, ViTPreTrainedModel):
    config: IViTConfig
    config_class = IViTConfig
    _no_split_modules = ["ViTEmbeddings", "IViTLayer"]
    _can_record_outputs = {
        "hidden_states": OutputRecorder(IViTLayer, index=0),
        "attentions": OutputRecorder(ViTAttention, index=1),
    }
    _source_name = "ViT"
    _converter = "IViTForImageClassification.from_vit"

    def push_to_hub(self, repo_id: str, *args, **kwargs):
        """`PreTrainedModel.push_to_hub` (weights, config with `auto_map`, code files), then, where the hf_lfi package
        is installed, its model card (overhead, usage, citation) in place of the generic one."""
        commit = super().push_to_hub(repo_id, *args, **kwargs)
        try:
            from hf_lfi.hub import model_card
        except ImportError:  # loaded as remote code without the package: the generic card stays
            return commit
        model_card(self, repo_id).push_to_hub(repo_id, token=kwargs.get("token"))
        return commit


class IViTModel(IViTPreTrainedModel):
    def __init__(self, config: IViTConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.config = config
        self.embeddings = ViTEmbeddings(config)
        interaction_layers = set(config.interaction_layer_indices)
        self.layers = nn.ModuleList(
            [IViTLayer(config, has_interaction_queries=i in interaction_layers) for i in range(config.num_hidden_layers)]
        )
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.pooler = ViTPooler(config) if add_pooling_layer else None
        self.post_init()
        self._apply_freezing()

    def get_input_embeddings(self):
        return self.embeddings.patch_embeddings

    @merge_with_config_defaults
    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        interpolate_pos_encoding: bool | None = None,
        attention_mask: torch.Tensor | None = None,
        output_interactions: bool | None = None,
        **kwargs,
    ) -> IViTModelOutput:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`):
            Images; any size divisible by the patch size when `interpolate_pos_encoding=True`, else `config.image_size`.
        output_interactions (`bool`, *optional*):
            Return the per-layer student maps (C_AGT over patches) and mean gates (g1, g2).
        """
        if pixel_values is None:
            raise ValueError("You have to specify pixel_values.")
        if pixel_values.ndim != 4:
            raise ValueError(f"pixel_values must be (batch, channels, height, width), got shape {tuple(pixel_values.shape)}.")
        height, width = pixel_values.shape[-2:]
        patch = self.config.patch_size if isinstance(self.config.patch_size, int) else self.config.patch_size[0]
        if height % patch or width % patch:
            raise ValueError(f"Image size {height}x{width} is not divisible by the patch size {patch}.")
        pixel_values = pixel_values.to(self.embeddings.patch_embeddings.projection.weight.dtype)
        hidden_states = self.embeddings(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
        # ViT's attention never masks tokens unless the caller gives a mask; keep the library's convention.
        if attention_mask is not None:
            attention_mask = create_bidirectional_mask(
                config=self.config, inputs_embeds=hidden_states, attention_mask=attention_mask
            )

        interaction_maps, gates = [], []
        for layer in self.layers:
            hidden_states, student_map, gate_means = layer(
                hidden_states, attention_mask, output_interactions=bool(output_interactions), **kwargs
            )
            if student_map is not None:
                interaction_maps.append(student_map.unflatten(-1, (height // patch, width // patch)))
                gates.append(gate_means)

        sequence_output = self.layernorm(hidden_states)
        pooled_output = self.pooler(sequence_output) if self.pooler is not None else None
        return IViTModelOutput(
            last_hidden_state=sequence_output,
            pooler_output=pooled_output,
            interaction_maps=tuple(interaction_maps) if output_interactions else None,
            gates=tuple(gates) if output_interactions else None,
        )


class IViTForImageClassification(IViTPreTrainedModel):
    _head_prefixes = ("classifier.",)

    def __init__(self, config: IViTConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.vit = IViTModel(config, add_pooling_layer=False)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.post_init()
        self._apply_freezing()

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        interpolate_pos_encoding: bool | None = None,
        attention_mask: torch.Tensor | None = None,
        output_interactions: bool | None = None,
        **kwargs,
    ) -> IViTImageClassifierOutput:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            Class indices in `[0, config.num_labels)`; the loss is ViT's (cross-entropy for single-label).
        output_interactions (`bool`, *optional*):
            Return the per-layer student maps (C_AGT over patches) and mean gates (g1, g2).
        """
        outputs: IViTModelOutput = self.vit(
            pixel_values,
            interpolate_pos_encoding=interpolate_pos_encoding,
            attention_mask=attention_mask,
            output_interactions=output_interactions,
            **kwargs,
        )
        logits = self.classifier(outputs.last_hidden_state[:, 0, :])
        loss = None
        if labels is not None:
            if labels.dtype in (torch.long, torch.int) and labels.numel() and (labels.min() < 0 or labels.max() >= self.num_labels):
                raise ValueError(
                    f"labels must lie in [0, {self.num_labels}), got values from {labels.min().item()} to {labels.max().item()}."
                )
            loss = self.loss_function(labels, logits, self.config, **kwargs)
        return IViTImageClassifierOutput(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            interaction_maps=outputs.interaction_maps,
            gates=outputs.gates,
        )

    @classmethod
    def from_vit(
        cls, vit: "ViTForImageClassification | ViTModel | str | os.PathLike", **config_overrides
    ) -> "IViTForImageClassification":
        """Convert a pretrained ViT (model object, local folder or Hub repo id) into an I-ViT (paper section 5.1.2).

        Every ViT weight is copied, each interaction query projection P'_q starts as a copy of P_q and the gate
        starts at g1 + g2 = 1, so the converted model's logits equal the ViT's at step 0. `freeze_backbone`
        defaults to True here. `config_overrides` go to `IViTConfig` (e.g. `num_labels=200`,
        `interaction_layers=[...]`); a new `num_labels` (or a headless `ViTModel`) gets a freshly initialised head.
        """
        if isinstance(vit, (str, os.PathLike)):
            source_type = AutoConfig.from_pretrained(vit).model_type
            if source_type != "vit":
                raise ValueError(f"from_vit expects a ViT checkpoint (model_type 'vit'), got model_type {source_type!r} at {vit}.")
            vit = ViTForImageClassification.from_pretrained(vit)
        if type(vit) not in (ViTForImageClassification, ViTModel):
            raise ValueError(
                f"from_vit expects a ViTForImageClassification or ViTModel, got {type(vit).__name__}."
            )
        source = vit.config.to_dict()
        for key in ("model_type", "architectures", "transformers_version", "auto_map", "dtype"):
            source.pop(key, None)
        if "num_labels" in config_overrides or "id2label" in config_overrides:
            source.pop("id2label", None)
            source.pop("label2id", None)
        config = IViTConfig(**{**source, "freeze_backbone": True, **config_overrides})
        config._attn_implementation = vit.config._attn_implementation
        config._name_or_path = vit.config._name_or_path  # the base model, for cards

        model = cls(config)
        state_dict = {
            (name if isinstance(vit, ViTForImageClassification) else f"vit.{name}"): tensor
            for name, tensor in vit.state_dict().items()
            if not name.startswith("pooler.")
        }
        head_reused = isinstance(vit, ViTForImageClassification) and vit.config.num_labels == config.num_labels
        if not head_reused:
            state_dict = {name: t for name, t in state_dict.items() if not name.startswith("classifier.")}
        load_source_weights(model, state_dict, newly_initialised=() if head_reused else ("classifier.",))
        init_interaction_queries_from_original(model)
        return model.to(dtype=next(vit.parameters()).dtype)


__all__ = ["IViTForImageClassification", "IViTModel", "IViTPreTrainedModel"]
