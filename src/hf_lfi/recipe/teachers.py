"""Where a run's teacher maps come from: the training rows' map column (an interaction dataset), a mask teacher
built from a mask column, or a VLM teacher run online on every training batch."""

from ..modeling.name_or_path import resolve_name_or_path
from .arguments import DataArguments


def build_online_teacher(data_args: DataArguments, device):
    """An `InteractionExtractor` over any VLM the extractor supports (LLaVA, LLaVA-NeXT, Qwen2-VL, Gemma 3, ...),
    loaded with `AutoModelForImageTextToText` from a Hub id or folder."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from ..interactions import InteractionExtractor

    name = resolve_name_or_path(data_args.teacher_model_name_or_path)  # a local path, or a Hub id the Hub has
    model = AutoModelForImageTextToText.from_pretrained(name, dtype="auto")
    model.to(device).eval()
    processor = AutoProcessor.from_pretrained(name)
    return InteractionExtractor(
        model, processor, data_args.teacher_prompt, max_new_tokens=data_args.teacher_max_new_tokens
    )


def prepare_teacher(train, data_args: DataArguments, training_args):
    """(training rows, online teacher): rows with checked teacher-map columns (precomputed or from the mask teacher),
    or the rows as they are plus the VLM extractor that maps every batch."""
    if data_args.teacher == "vlm":
        return train, build_online_teacher(data_args, training_args.device)
    map_column, valid_column = training_args.interaction_map_column, training_args.interaction_valid_column
    if data_args.teacher == "mask":
        from ..interactions.mapping import MaskInteractionMapFn

        teacher = MaskInteractionMapFn(
            data_args.mask_column,
            (data_args.mask_teacher_grid,) * 2,
            data_args.mask_teacher_blur,
            data_args.mask_teacher_leak,
            data_args.mask_teacher_wrong,
        )
        with training_args.main_process_first(desc="mask teacher maps"):
            train = train.map(teacher, batched=True, desc="mask teacher maps")
        train = train.rename_columns({"interaction_map": map_column, "interaction_valid": valid_column})
    return train, None  # InteractionTrainer checks the maps (`check_interaction_column`) when it is built


__all__ = ["build_online_teacher", "prepare_teacher"]
