"""Whether a teacher's processor belongs to its model, checked before the teacher runs.

A processor of another family (a Qwen2-VL processor with a LLaVA) or another checkpoint (a larger vocabulary, another
image token) otherwise fails deep inside the model's forward (an embedding index out of range, a missing
`image_grid_thw`) or gives prompts without image tokens.
"""

from transformers.models.auto.processing_auto import PROCESSOR_MAPPING


def check_processor_matches(model, processor) -> None:
    """Raise a `ValueError` saying how `processor` does not fit `model`: another family's processor class, a
    tokenizer with more tokens than the model embeds, or another image token id."""
    advice = "load both from the same checkpoint (AutoProcessor.from_pretrained of the teacher's id or folder)"
    model_type = model.config.model_type
    expected = PROCESSOR_MAPPING[type(model.config)] if type(model.config) in PROCESSOR_MAPPING else None
    is_library_class = type(processor).__module__.startswith("transformers.")  # remote code may name its own
    if expected is not None and is_library_class and not isinstance(processor, expected):
        raise ValueError(
            f"The processor is a {type(processor).__name__}, but the teacher ({type(model).__name__}, model_type "
            f"{model_type!r}) takes a {expected.__name__}: {advice}."
        )
    tokenizer = getattr(processor, "tokenizer", None)
    rows = model.get_input_embeddings().num_embeddings
    if tokenizer is not None and len(tokenizer) > rows:
        raise ValueError(
            f"The processor's tokenizer has {len(tokenizer)} tokens, but the teacher embeds only {rows}: they come "
            f"from different checkpoints; {advice}."
        )
    theirs = getattr(processor, "image_token_id", None)
    ours = getattr(model.config, "image_token_id", None)
    if theirs is not None and ours is not None and theirs != ours:
        raise ValueError(
            f"The processor marks images with token id {theirs}, the teacher expects {ours} (config.image_token_id): "
            f"{advice}."
        )


__all__ = ["check_processor_matches"]
