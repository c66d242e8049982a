"""PyTorch I-ViT: a ViT whose attention layers learn from interactions (paper Eq. 3-9).

Derived from `transformers.models.vit` the way `ijepa`/`deit` derive from it: only the attention of the interaction
layers is new; embeddings, layers, model and head forwards, and the loss are ViT's own.
Relative imports stay inside this folder so that `register_for_auto_class` uploads working remote code.
"""

import os
from dataclasses import dataclass

import torch
from torch import nn
from transformers import ViTForImageClassification, ViTModel
from transformers.modeling_outputs import BaseModelOutputWithPooling, ImageClassifierOutput
from transformers.models.vit.modeling_vit import ViTAttention, ViTPreTrainedModel

from .configuration_ivit import IViTConfig
from .conversion import InteractionModelMixin, convert_to_interaction_model, forward_with_interactions
from .interaction_attention import INTERACTION_RECORDERS, InteractionAttentionMixin


@dataclass
class IViTModelOutput(BaseModelOutputWithPooling):
    r"""
    interaction_maps (`tuple[torch.FloatTensor]`, *optional*, returned when `output_interactions=True`):
        One student map per interaction layer (in `config.interaction_layer_indices` order): C_AGT reduced to a
        distribution over patches (`config.interaction_map_reduction`), shape `(batch_size, grid_height, grid_width)`.
    gates (`tuple[torch.FloatTensor]`, *optional*, returned when `output_interactions=True`):
        One tensor per interaction layer with the mean gates (g1 for C_AGT, g2 for C_VFM) of every head,
        shape `(batch_size, num_heads, 2)`.
    original_attentions, interaction_attentions (`tuple[torch.FloatTensor]`, *optional*, returned when
    `output_interactions=True` and `output_attentions=True`, under `attn_implementation="eager"`):
        Per interaction layer, C_VFM (attention of the original queries, Eq. 3) and C_AGT (of the interaction queries,
        Eq. 4), `(batch_size, num_heads, queries, keys)`; the attentions output holds their gated mix C_F (Eq. 6).
    """

    interaction_maps: tuple[torch.FloatTensor, ...] | None = None
    gates: tuple[torch.FloatTensor, ...] | None = None
    original_attentions: tuple[torch.FloatTensor, ...] | None = None
    interaction_attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class IViTImageClassifierOutput(ImageClassifierOutput):
    r"""
    interaction_maps, gates, original_attentions, interaction_attentions: as in `IViTModelOutput`.
    """

    interaction_maps: tuple[torch.FloatTensor, ...] | None = None
    gates: tuple[torch.FloatTensor, ...] | None = None
    original_attentions: tuple[torch.FloatTensor, ...] | None = None
    interaction_attentions: tuple[torch.FloatTensor, ...] | None = None


class IViTAttention(InteractionAttentionMixin, ViTAttention):
    """ViT attention plus interaction queries P'_q sharing the keys, mixed by a gated control network (Eq. 3-8).
    The CLS key is left out of the student map."""

    num_prefix_tokens = 1


class IViTPreTrainedModel(InteractionModelMixin, ViTPreTrainedModel):
    config: IViTConfig
    config_class = IViTConfig
    _can_record_outputs = {**ViTPreTrainedModel._can_record_outputs, **INTERACTION_RECORDERS}
    _source_name = "ViT"
    _converter = "IViTForImageClassification.from_vit"


class IViTModel(IViTPreTrainedModel, ViTModel):
    def __init__(self, config: IViTConfig, add_pooling_layer: bool = True, use_mask_token: bool = False):
        super().__init__(config, add_pooling_layer=add_pooling_layer, use_mask_token=use_mask_token)
        self._use_interaction_attention(self.layers, "attention", IViTAttention)
        self.post_init()

    forward = forward_with_interactions(ViTModel.forward, IViTModelOutput)


class IViTForImageClassification(IViTPreTrainedModel, ViTForImageClassification):
    _head_prefixes = ("classifier.",)
    _interaction_sources = ("vit",)
    _source_classes = {ViTForImageClassification: {"": ""}, ViTModel: {"pooler.": None, "": "vit."}}
    _source_model_types = {"vit": (ViTForImageClassification,)}

    def __init__(self, config: IViTConfig):
        IViTPreTrainedModel.__init__(self, config)
        self.num_labels = config.num_labels
        self.vit = IViTModel(config, add_pooling_layer=False)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.post_init()

    forward = forward_with_interactions(ViTForImageClassification.forward, IViTImageClassifierOutput)

    @classmethod
    def from_vit(
        cls, vit: "ViTForImageClassification | ViTModel | str | os.PathLike", **config_overrides
    ) -> "IViTForImageClassification":
        """Convert a pretrained ViT (model object, local folder or Hub repo id) into an I-ViT (paper section 5.1.2):
        every weight copied, each P'_q a copy of P_q, gates at g1 + g2 = 1 (step-0 logits equal the ViT's),
        `freeze_backbone=True` unless overridden. `config_overrides` go to `IViTConfig` (e.g. `num_labels=200`,
        `interaction_layers=[...]`); a new `num_labels` (or a headless `ViTModel`) gets a fresh classifier."""
        return convert_to_interaction_model(cls, vit, config_overrides, "from_vit")


__all__ = ["IViTForImageClassification", "IViTModel", "IViTPreTrainedModel"]
