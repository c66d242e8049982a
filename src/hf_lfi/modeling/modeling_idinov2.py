"""PyTorch I-DINOv2: a DINOv2 (with or without registers) whose attention layers learn from interactions (Eq. 3-9).

Derived from `transformers.models.dinov2_with_registers`, which with zero registers computes DINOv2 (its embeddings
are DINOv2's own then): only the attention of the interaction layers is new; embeddings, layers, encoder, model and
head forwards, and the loss are the library's. Relative imports stay inside this folder (remote code).
"""

import os
from dataclasses import dataclass

import torch
from torch import nn
from transformers import (
    Dinov2ForImageClassification,
    Dinov2Model,
    Dinov2WithRegistersForImageClassification,
    Dinov2WithRegistersModel,
)
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPooling, ImageClassifierOutput
from transformers.models.dinov2.modeling_dinov2 import Dinov2Embeddings
from transformers.models.dinov2_with_registers.modeling_dinov2_with_registers import (
    Dinov2WithRegistersAttention,
    Dinov2WithRegistersEmbeddings,
    Dinov2WithRegistersEncoder,
    Dinov2WithRegistersPreTrainedModel,
)

from .configuration_idinov2 import IDinov2Config
from .conversion import InteractionModelMixin, convert_to_interaction_model, forward_with_interactions
from .interaction_attention import INTERACTION_RECORDERS, InteractionAttentionMixin


@dataclass
class IDinov2ModelOutput(BaseModelOutputWithPooling):
    r"""
    interaction_maps (`tuple[torch.FloatTensor]`, *optional*, returned when `output_interactions=True`):
        Per interaction layer, the student map over patches (CLS and register keys dropped),
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
class IDinov2ImageClassifierOutput(ImageClassifierOutput):
    r"""
    interaction_maps, gates, original_attentions, interaction_attentions: as in `IDinov2ModelOutput`.
    """

    interaction_maps: tuple[torch.FloatTensor, ...] | None = None
    gates: tuple[torch.FloatTensor, ...] | None = None
    original_attentions: tuple[torch.FloatTensor, ...] | None = None
    interaction_attentions: tuple[torch.FloatTensor, ...] | None = None


class IDinov2Attention(InteractionAttentionMixin, Dinov2WithRegistersAttention):
    """DINOv2 attention plus interaction queries P'_q sharing the keys (Eq. 3-8); the prefix keys (CLS and registers)
    are left out of the student map."""

    @property
    def num_prefix_tokens(self) -> int:
        return 1 + self.config.num_register_tokens


class IDinov2PreTrainedModel(InteractionModelMixin, Dinov2WithRegistersPreTrainedModel):
    config: IDinov2Config
    config_class = IDinov2Config
    _can_record_outputs = {**Dinov2WithRegistersPreTrainedModel._can_record_outputs, **INTERACTION_RECORDERS}
    _source_name = "DINOv2"
    _converter = "IDinov2ForImageClassification.from_dinov2"

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, Dinov2Embeddings):  # the embeddings of a DINOv2 without registers, as DINOv2 does
            init.trunc_normal_(module.position_embeddings, mean=0.0, std=self.config.initializer_range)
            init.trunc_normal_(module.cls_token, mean=0.0, std=self.config.initializer_range)
            if module.mask_token is not None:
                init.zeros_(module.mask_token)


class IDinov2Encoder(IDinov2PreTrainedModel, Dinov2WithRegistersEncoder):
    def __init__(self, config: IDinov2Config):
        super().__init__(config)
        self._use_interaction_attention(self.layer, "attention", IDinov2Attention)
        self.post_init()


class IDinov2Model(IDinov2PreTrainedModel, Dinov2WithRegistersModel):
    _interaction_sources = ("encoder",)

    def __init__(self, config: IDinov2Config):
        IDinov2PreTrainedModel.__init__(self, config)
        # without registers, DINOv2's own embeddings (its position interpolation differs from the registers model's)
        self.embeddings = (Dinov2WithRegistersEmbeddings if config.num_register_tokens else Dinov2Embeddings)(config)
        self.encoder = IDinov2Encoder(config)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    forward = forward_with_interactions(Dinov2WithRegistersModel.forward, IDinov2ModelOutput)


class IDinov2ForImageClassification(IDinov2PreTrainedModel, Dinov2WithRegistersForImageClassification):
    _head_prefixes = ("classifier.",)
    _interaction_sources = ("dinov2_with_registers",)
    _source_classes = {
        Dinov2ForImageClassification: {"dinov2.": "dinov2_with_registers.", "classifier.": "classifier."},
        Dinov2Model: {"": "dinov2_with_registers."},
        Dinov2WithRegistersForImageClassification: {"": ""},
        Dinov2WithRegistersModel: {"": "dinov2_with_registers."},
    }
    _source_model_types = {
        "dinov2": (Dinov2ForImageClassification,),
        "dinov2_with_registers": (Dinov2WithRegistersForImageClassification,),
    }

    def __init__(self, config: IDinov2Config):
        IDinov2PreTrainedModel.__init__(self, config)
        self.num_labels = config.num_labels
        self.dinov2_with_registers = IDinov2Model(config)
        self.classifier = (
            nn.Linear(2 * config.hidden_size, config.num_labels) if config.num_labels > 0 else nn.Identity()
        )
        self.post_init()

    forward = forward_with_interactions(
        Dinov2WithRegistersForImageClassification.forward, IDinov2ImageClassifierOutput
    )

    @classmethod
    def _source_config(cls, source_config) -> dict:
        return {"num_register_tokens": 0, **source_config.to_dict()}

    @classmethod
    def baseline_model(cls, config: IDinov2Config):
        base = (
            Dinov2WithRegistersForImageClassification if config.num_register_tokens else Dinov2ForImageClassification
        )
        return base(config.base_config())

    @classmethod
    def from_dinov2(
        cls, dinov2: "Dinov2ForImageClassification | Dinov2Model | str | os.PathLike", **config_overrides
    ) -> "IDinov2ForImageClassification":
        """Convert a DINOv2 or a DINOv2 with registers (model object, local folder or Hub repo id) into an I-DINOv2:
        every weight copied, each P'_q a copy of P_q, gates at g1 + g2 = 1 (step-0 logits equal the source's),
        `freeze_backbone=True` unless overridden. A new `num_labels` (or a headless model) gets a fresh classifier."""
        return convert_to_interaction_model(cls, dinov2, config_overrides, "from_dinov2")


__all__ = ["IDinov2ForImageClassification", "IDinov2Model", "IDinov2PreTrainedModel"]
