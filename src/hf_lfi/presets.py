"""Ready configurations of the students (the paper's I-ViT-S/B/L at 16 px patches, DINOv2 / SigLIP sizes, small
DETR-family models for CPU runs); parameter and FLOP counts of every I-model against its source model."""

import inspect
import json
from importlib import resources

import torch
from torch.utils.flop_counter import FlopCounterMode

from .modeling.conversion import is_interaction_parameter
from .students import interaction_model_class, student_for_model_type

PRESET_NAMES = ("ivit-s-16", "ivit-b-16", "ivit-l-16")
# Students beyond ViT at their usual backbone sizes (DINOv2-S/14, DINOv2-B/14 with 4 registers, SigLIP-B/16 at 224 px).
STUDENT_PRESET_NAMES = ("idinov2-s-14", "idinov2-b-14-reg4", "isiglip-b-16")
# Small DETR-family models (3-4 stage ResNet backbone built from its config, no download) for CPU runs.
DETECTION_PRESET_NAMES = ("idetr-small", "idetr-seg-small", "icdetr-small")
ALL_PRESET_NAMES = PRESET_NAMES + STUDENT_PRESET_NAMES + DETECTION_PRESET_NAMES

# Paper Table 1 (ImageNet-style 1000-class head): ViT parameters -> I-ViT parameters.
PAPER_PARAMETERS = {
    "ivit-s-16": (22e6, 24e6),
    "ivit-b-16": (86e6, 93e6),
    "ivit-l-16": (304e6, 329e6),
}


def preset_config(name: str, **overrides):
    """The named ready configuration (`ALL_PRESET_NAMES`), with overrides such as `num_labels=200`; its class follows
    the preset's `model_type` (`IViTConfig`, `IDinov2Config`, `ISiglipConfig`, `IDetrConfig`, ...)."""
    if name not in ALL_PRESET_NAMES:
        raise ValueError(f"Unknown preset {name!r}; choose one of {list(ALL_PRESET_NAMES)}.")
    values = json.loads(resources.files("hf_lfi").joinpath("configs", f"{name}.json").read_text())
    config_class = student_for_model_type(values.pop("model_type")).config_class
    return config_class(**{**values, **overrides})


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _models(config, model_class: type | None = None, device: str = "meta") -> tuple[torch.nn.Module, torch.nn.Module]:
    """The I-model of `config` (`model_class`, default its configuration's task class) and the source model it extends,
    built on `device` (the meta device: no memory used)."""
    model_class = model_class or interaction_model_class(config)
    with torch.device(device):
        return model_class(config), model_class.baseline_model(config)


def parameter_report(config, model_class: type | None = None) -> dict:
    """Parameter counts of an I-model (any I-config; `model_class` picks another task model of it, e.g.
    `IDetrForSegmentation`) and of the source model it extends, built on the meta device (no memory used).

    `overhead` is what the built I-model adds to its source; `expected_overhead` counts the modules LFI adds as built
    (each interaction layer's d x d query projection and its gate, every gate form). The keys keep their I-ViT names:
    `ivit_parameters` is the I-model's count, `vit_parameters` its source's (`source` names it).
    """
    model, baseline = _models(config, model_class)
    added = sum(p.numel() for name, p in model.named_parameters() if is_interaction_parameter(name))
    return {
        "source": model._source_name,
        "vit_parameters": _count(baseline),
        "ivit_parameters": _count(model),
        "overhead": _count(model) - _count(baseline),
        "expected_overhead": added,
    }


def _pair(size) -> tuple | None:
    return (size, size) if isinstance(size, int) else tuple(size) if size is not None else None


def flop_report(config, image_size: int | tuple[int, int] | None = None, model_class: type | None = None) -> dict:
    """FLOPs of one image through the I-model (`model_class` as in `parameter_report`) and through its source model,
    at `image_size` (default: the configuration's, else 512 px; another size than the configuration's interpolates
    the position embeddings where the source model asks for it).

    Counted on the meta device (no compute, no memory), except for the DETR family: transformers reads the values of
    its pixel mask, which meta tensors lack, so those models run one real image on the CPU. Attention runs in its
    eager form, whose matmuls the counter sees (it cannot look inside fused SDPA kernels).
    """
    config_size = getattr(config, "image_size", None)
    height, width = _pair(image_size or config_size or 512)
    model_class = model_class or interaction_model_class(config)
    device = "cpu" if "pixel_mask" in inspect.signature(model_class.forward).parameters else "meta"
    flops, models = {}, _models(config, model_class, device)
    kwargs = {}
    if "interpolate_pos_encoding" in inspect.signature(models[1].forward).parameters:  # ViT, SigLIP
        kwargs["interpolate_pos_encoding"] = (height, width) != _pair(config_size)
    for key, model in zip(("ivit", "vit"), models):
        model.eval().set_attn_implementation("eager")
        pixel_values = torch.zeros(1, getattr(config, "num_channels", 3), height, width, device=device)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(pixel_values, **kwargs)
        flops[f"{key}_flops"] = counter.get_total_flops()
    flops["ratio"] = flops["ivit_flops"] / flops["vit_flops"]
    return flops


__all__ = [
    "ALL_PRESET_NAMES",
    "DETECTION_PRESET_NAMES",
    "PAPER_PARAMETERS",
    "PRESET_NAMES",
    "STUDENT_PRESET_NAMES",
    "flop_report",
    "parameter_report",
    "preset_config",
]
