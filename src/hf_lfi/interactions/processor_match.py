"""Whether a teacher's processor belongs to its model, checked on one prompt before the teacher runs.

A processor of another family (a Qwen2-VL processor with a LLaVA) or of another checkpoint (another vocabulary,
another image token) otherwise fails deep inside the model's forward (an embedding index out of range, a missing
`image_grid_thw`) or gives prompts whose image the model never sees.
"""

import torch

ADVICE = "load both from the same checkpoint (AutoProcessor.from_pretrained of the teacher's id or folder)"


def check_processor_matches(model, processor, inputs) -> None:
    """Raise a `ValueError` when the processor's tokenizer (or `inputs`, its output for one image and a question, as
    the teacher will get them) has token ids the model does not embed, or `inputs` lack the model's image token."""
    input_ids = inputs["input_ids"]
    rows = model.get_input_embeddings().num_embeddings
    tokens = max(len(getattr(processor, "tokenizer", ())), int(input_ids.max()) + 1)
    if tokens > rows:
        raise ValueError(
            f"The processor ({type(processor).__name__}) has {tokens} tokens, but the teacher "
            f"({type(model).__name__}) embeds only {rows}: they come from different models; {ADVICE}."
        )
    image_token_id = model.config.image_token_id
    if not torch.any(input_ids == image_token_id):
        raise ValueError(
            f"The processor ({type(processor).__name__}) marks no image with the teacher's image token (id "
            f"{image_token_id}, {type(model).__name__}): it belongs to another model; {ADVICE}."
        )


__all__ = ["check_processor_matches"]
