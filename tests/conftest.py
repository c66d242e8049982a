import os
import shutil
from pathlib import Path

import pytest
import torch
from hub_server import hub_server  # noqa: F401  (the fixture, for every test module)

# Without a GPU, the Triton kernel's tests run on CPU through Triton's interpreter, which triton picks when its functions
# are defined: set before anything imports triton (transformers does, and hf_lfi).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def tiny_ivit_config(**overrides):
    """The transformers ViT tester's tiny shape: 30 px images, 2 px patches, hidden 32, 2 layers, 4 heads."""
    from hf_lfi import IViTConfig

    values = dict(
        image_size=30,
        patch_size=2,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        num_labels=3,
    )
    values.update(overrides)
    return IViTConfig(**values)


def tiny_vit(**overrides):
    """A plain `ViTForImageClassification` of the tiny I-ViT's shape (the model `from_vit` converts), in eval mode."""
    from transformers import ViTForImageClassification

    return ViTForImageClassification(tiny_ivit_config(**overrides).to_vit_config()).eval()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def randomize_gates(model: torch.nn.Module, scale: float = 0.5) -> None:
    """Give every gate network non-trivial weights, so tests see both maps mixed (not the step-0 gate)."""
    from hf_lfi.modeling.interaction_attention import GatedControlNetwork, QueryGate, ScalarGate

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (GatedControlNetwork, QueryGate, ScalarGate)):
                for parameter in module.parameters():
                    parameter.normal_(std=scale)


def run_attention(attention: torch.nn.Module, *args, **kwargs) -> tuple:
    """Call an interaction attention; returns (output, C_F, student map, mean gates), the last two as the attention
    publishes them for recording (None unless `output_interactions=True`)."""
    published = []
    handle = attention.interactions.register_forward_hook(lambda _module, _args, output: published.append(output))
    try:
        output, fused = attention(*args, **kwargs)
    finally:
        handle.remove()
    student_map, gates = published[0] if published else (None, None)
    return output, fused, student_map, gates


def tiny_detr_kwargs(**overrides) -> dict:
    """A tiny DETR: 2-stage ResNet backbone (stride 8, no timm, no download), d_model 32, 2+2 layers, 4 heads."""
    from transformers import ResNetConfig

    values = dict(
        use_timm_backbone=False,
        use_pretrained_backbone=False,
        backbone_config=ResNetConfig(
            embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic", out_features=["stage2"]
        ),
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        num_queries=10,
        num_labels=3,
    )
    values.update(overrides)
    return values


def tiny_detr(**overrides):
    """A randomly initialised tiny `DetrForObjectDetection` in eval mode (what `from_detr` converts)."""
    from transformers import DetrConfig, DetrForObjectDetection

    return DetrForObjectDetection(DetrConfig(**tiny_detr_kwargs(**overrides))).eval()


def tiny_segmentation_kwargs(**overrides) -> dict:
    """A tiny DETR for segmentation: its mask head reads 3 FPN levels, so a 4-stage ResNet backbone returning every
    stage; d_model + heads must be divisible by 8 (DETR's mask head), hence 8 heads of width 4."""
    from transformers import ResNetConfig

    backbone = ResNetConfig(
        embedding_size=8,
        hidden_sizes=[8, 8, 16, 16],
        depths=[1, 1, 1, 1],
        layer_type="basic",
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    return tiny_detr_kwargs(
        backbone_config=backbone, encoder_attention_heads=8, decoder_attention_heads=8, **overrides
    )


def remote_code_outputs(checkpoint, auto_class: str, inputs_path, outputs_path, keys: tuple[str, ...]) -> str:
    """Load `checkpoint` with `transformers.<auto_class>` and `trust_remote_code=True` in a fresh interpreter where
    `hf_lfi` cannot be imported, run it on the `(pixel_values, pixel_mask)` saved at `inputs_path` and save the output
    fields `keys` to `outputs_path`. Returns the module of the loaded class (remote code, not hf_lfi)."""
    import subprocess
    import sys

    script = (
        "import sys, torch\nsys.modules['hf_lfi'] = None\n"
        f"from transformers import {auto_class}\n"
        f"m = {auto_class}.from_pretrained({str(checkpoint)!r}, trust_remote_code=True).eval()\n"
        f"x, mask = torch.load({str(inputs_path)!r})\n"
        "with torch.no_grad(): out = m(x, pixel_mask=mask)\n"
        f"torch.save({{k: out[k] for k in {keys!r}}}, {str(outputs_path)!r}); print(type(m).__module__)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=outputs_path.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def hub_cache_snapshot(home: Path, repo_type: str, repo_id: str, files_from: Path) -> None:
    """Lay out files as `huggingface_hub` caches a downloaded repo (refs/main -> snapshots/<sha>/...)."""
    folder = home / "hub" / f"{repo_type}s--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(files_from, folder / "snapshots" / commit)
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)


def tiny_student_config(student, task: str):
    """A tiny configuration of every student of the registry (`hf_lfi.STUDENTS`) for `task`: tests parametrised over
    the registry build their models from it (a new student adds its tiny shape here)."""
    vision = dict(image_size=28, patch_size=7, hidden_size=32, num_hidden_layers=2, num_attention_heads=4)
    shapes = {
        "ivit": lambda: dict(vision, intermediate_size=37),
        "idinov2": lambda: dict(vision),
        "isiglip": lambda: dict(vision, intermediate_size=37),
        "idetr": lambda: tiny_segmentation_kwargs() if task == "segmentation" else tiny_detr_kwargs(),
        "iconditional_detr": tiny_detr_kwargs,
    }
    return student.config_class(**{**shapes[student.model_type](), "num_labels": 3})
