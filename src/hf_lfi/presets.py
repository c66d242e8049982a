"""Ready I-ViT configurations (the paper's I-ViT-S/B/L at 16 px patches, ViT defaults), parameter and FLOP counts."""

import json
from importlib import resources

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import ViTForImageClassification

from .modeling import IViTConfig, IViTForImageClassification
from .modeling.interaction_attention import build_gate

PRESET_NAMES = ("ivit-s-16", "ivit-b-16", "ivit-l-16")

# Paper Table 1 (ImageNet-style 1000-class head): ViT parameters -> I-ViT parameters.
PAPER_PARAMETERS = {
    "ivit-s-16": (22e6, 24e6),
    "ivit-b-16": (86e6, 93e6),
    "ivit-l-16": (304e6, 329e6),
}


def preset_config(name: str, **overrides) -> IViTConfig:
    """The named ready configuration (`PRESET_NAMES`), with `IViTConfig` overrides such as `num_labels=200`."""
    if name not in PRESET_NAMES:
        raise ValueError(f"Unknown preset {name!r}; choose one of {list(PRESET_NAMES)}.")
    values = json.loads(resources.files("hf_lfi").joinpath("configs", f"{name}.json").read_text())
    values.pop("model_type")
    return IViTConfig(**{**values, **overrides})


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def parameter_report(config: IViTConfig) -> dict:
    """Parameter counts of an I-ViT and of the ViT it extends, built on the meta device (no memory used).

    `expected_overhead` is one d x d query projection (plus bias) per interaction layer plus that layer's gate (as
    `build_gate` makes it, for every gate form); `overhead` is what the built model actually adds.
    """
    with torch.device("meta"):
        ivit_parameters = _count(IViTForImageClassification(config))
        vit_parameters = _count(ViTForImageClassification(config.to_vit_config()))
    d = config.hidden_size
    with torch.device("meta"):
        gate = _count(build_gate(config.gate_granularity, config.gate_form, config.num_attention_heads,
                                 config.gate_hidden_size, config.gate_init_bias, config.gate_input_scale, d))  # fmt: skip
    per_layer = d * d + (d if config.qkv_bias else 0) + gate
    return {
        "vit_parameters": vit_parameters,
        "ivit_parameters": ivit_parameters,
        "overhead": ivit_parameters - vit_parameters,
        "expected_overhead": per_layer * len(config.interaction_layer_indices),
    }


def flop_report(config: IViTConfig) -> dict:
    """FLOPs of one image through the I-ViT and through its ViT, counted on the meta device (no compute, no memory).

    Attention runs in its eager form, whose matmuls the counter sees (it cannot look inside fused SDPA kernels).
    """
    flops = {}
    for key, model_class, model_config in (
        ("ivit", IViTForImageClassification, config),
        ("vit", ViTForImageClassification, config.to_vit_config()),
    ):
        with torch.device("meta"):
            model = model_class(model_config).eval()
        model.set_attn_implementation("eager")
        pixel_values = torch.empty(1, 3, config.image_size, config.image_size, device="meta")
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(pixel_values)
        flops[f"{key}_flops"] = counter.get_total_flops()
    flops["ratio"] = flops["ivit_flops"] / flops["vit_flops"]
    return flops


__all__ = ["PAPER_PARAMETERS", "PRESET_NAMES", "flop_report", "parameter_report", "preset_config"]
