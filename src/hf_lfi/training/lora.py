"""Optional LoRA on the frozen backbone's attention (peft), the interaction parts and the head trained in full."""

from ..modeling.conversion import INTERACTION_PARAMETER_KEYS


def add_lora(model, rank: int = 8, alpha: int = 16, dropout: float = 0.0, target_modules=("q_proj", "v_proj")):
    """Wrap `model` in a `peft.PeftModel` with LoRA adapters of `rank` on `target_modules`.

    The interaction queries, gated control networks and task heads go to `modules_to_save`, so they train in full
    and are saved with the adapter; reload with `PeftModel.from_pretrained(base_model, adapter_folder)`.
    """
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as error:
        raise ImportError("LoRA needs peft: pip install 'hf_lfi[peft]'.") from error
    if rank <= 0:
        raise ValueError(f"LoRA rank must be positive, got {rank}.")
    # a plain transformers classifier (the ViT baseline) has no `_head_prefixes`: its head is `classifier`
    heads = getattr(model, "_head_prefixes", ("classifier.",))
    modules_to_save = [key.rstrip(".") for key in (*INTERACTION_PARAMETER_KEYS, *heads)]
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(target_modules),
        modules_to_save=modules_to_save,
    )
    return get_peft_model(model, config)


__all__ = ["add_lora"]
