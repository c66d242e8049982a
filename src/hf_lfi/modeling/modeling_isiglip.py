"""PyTorch I-SigLIP: SigLIP's vision tower with attention layers that learn from interactions (paper Eq. 3-9), for
image classification.

Derived from `transformers.models.siglip`: only the attention of the interaction layers is new; embeddings, encoder,
the attention-pool head, model and classifier forwards and the loss are SigLIP's own. SigLIP has no CLS token, so
the student map is the mean of C_AGT over the query rows. Relative imports stay inside this folder (remote code).
"""

import os
from dataclasses import dataclass

import torch
from torch import nn
from transformers import SiglipForImageClassification, SiglipModel, SiglipVisionModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPooling, ImageClassifierOutput
from transformers.models.siglip.modeling_siglip import SiglipAttention, SiglipPreTrainedModel

from .configuration_isiglip import ISiglipConfig
from .conversion import InteractionModelMixin, convert_to_interaction_model, forward_with_interactions
from .interaction_attention import INTERACTION_RECORDERS, InteractionAttentionMixin


@dataclass
class ISiglipVisionModelOutput(BaseModelOutputWithPooling):
    r"""
    interaction_maps (`tuple[torch.FloatTensor]`, *optional*, returned when `output_interactions=True`):
        Per interaction layer, the student map over patches (mean of C_AGT over query rows),
        `(batch_size, grid_height, grid_width)`.
    gates (`tuple[torch.FloatTensor]`, *optional*, returned when `output_interactions=True`):
        Per interaction layer, the mean gates (g1, g2) of every head, `(batch_size, num_heads, 2)`.
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
class ISiglipImageClassifierOutput(ImageClassifierOutput):
    r"""
    interaction_maps, gates, original_attentions, interaction_attentions: as in `ISiglipVisionModelOutput`.
    """

    interaction_maps: tuple[torch.FloatTensor, ...] | None = None
    gates: tuple[torch.FloatTensor, ...] | None = None
    original_attentions: tuple[torch.FloatTensor, ...] | None = None
    interaction_attentions: tuple[torch.FloatTensor, ...] | None = None


class ISiglipAttention(InteractionAttentionMixin, SiglipAttention):
    """SigLIP attention plus interaction queries P'_q sharing the keys (Eq. 3-8); no prefix token."""

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs):
        return self.interaction_attention(
            hidden_states, attention_mask, scaling=self.scale, dropout=self.dropout, **kwargs
        )


class ISiglipPreTrainedModel(InteractionModelMixin, SiglipPreTrainedModel):
    config: ISiglipConfig
    config_class = ISiglipConfig
    input_modalities = ("image",)
    _can_record_outputs = {**SiglipPreTrainedModel._can_record_outputs, **INTERACTION_RECORDERS}
    _source_name = "SigLIP"
    _converter = "ISiglipForImageClassification.from_siglip"

    def _init_weights(self, module):
        if isinstance(module, SiglipForImageClassification):  # SigLIP reads the width from a composite config
            if isinstance(module.classifier, nn.Linear):
                init.normal_(module.classifier.weight, std=self.config.hidden_size**-0.5)
            return
        super()._init_weights(module)


class ISiglipVisionModel(ISiglipPreTrainedModel, SiglipVisionModel):
    def __init__(self, config: ISiglipConfig):
        super().__init__(config)
        self._use_interaction_attention(self.encoder.layers, "self_attn", ISiglipAttention)
        self.post_init()

    forward = forward_with_interactions(SiglipVisionModel.forward, ISiglipVisionModelOutput)


class ISiglipForImageClassification(ISiglipPreTrainedModel, SiglipForImageClassification):
    # where its base model sits (SigLIP's "siglip" names no submodule), so that it loads from a vision model's weights
    base_model_prefix = "vision_model"
    _head_prefixes = ("classifier.",)
    _interaction_sources = ("vision_model",)
    _source_classes = {
        SiglipForImageClassification: {"": ""},
        SiglipVisionModel: {"": "vision_model."},
        SiglipModel: {"vision_model.": "vision_model."},
    }
    _source_model_types = {"siglip": (SiglipForImageClassification,), "siglip_vision_model": (SiglipVisionModel,)}

    def __init__(self, config: ISiglipConfig):
        ISiglipPreTrainedModel.__init__(self, config)
        self.num_labels = config.num_labels
        self.vision_model = ISiglipVisionModel(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.post_init()

    forward = forward_with_interactions(SiglipForImageClassification.forward, ISiglipImageClassifierOutput)

    @classmethod
    def _source_config(cls, source_config) -> dict:
        vision = getattr(source_config, "vision_config", source_config).to_dict()
        labels = {key: getattr(source_config, key) for key in ("id2label", "label2id")}
        return {**vision, **labels}

    @classmethod
    def from_siglip(
        cls,
        siglip: "SiglipForImageClassification | SiglipModel | SiglipVisionModel | str | os.PathLike",
        **config_overrides,
    ) -> "ISiglipForImageClassification":
        """Convert a SigLIP (classifier, two-tower model or vision tower; object, local folder or Hub repo id) into an
        I-SigLIP classifier: every vision weight copied (the attention-pool head too), each P'_q a copy of P_q, gates at
        g1 + g2 = 1 (step-0 logits equal the source's), `freeze_backbone=True` unless overridden. A source without
        classifier, or a new `num_labels`, gets a fresh classifier."""
        return convert_to_interaction_model(cls, siglip, config_overrides, "from_siglip")


__all__ = ["ISiglipForImageClassification", "ISiglipPreTrainedModel", "ISiglipVisionModel"]
