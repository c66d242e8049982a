"""The teacher side of LFI: prompts, VLM interaction maps (paper Eq. 10-12) with a layout adapter per VLM family,
mask teachers, the `datasets` map functions that precompute them (resumable, on several processes), and plots."""

from .fingerprint import weights_fingerprint
from .layouts import LAYOUTS, ImageGrid, ImageTokenLayout, image_token_layout
from .mapping import (
    STATUS_EMPTY_MASK,
    STATUS_OK,
    DetectionInteractionMapFn,
    InteractionMapFn,
    MaskInteractionMapFn,
    interaction_map_fn,
    precompute_interactions,
)
from .maps import contrast_map, crop_interaction_map, mask_to_grid, mask_to_interaction_map
from .plotting import plot_interaction_maps
from .prompts import (
    PARSE_STATUSES,
    PROMPTS,
    ParsedAnswer,
    PromptTemplate,
    check_class_names,
    get_prompt,
    register_prompt,
)
from .teacher import InteractionExtractor, TeacherInteraction, answer_row_attention, draw_boxes, expand_to_square

__all__ = [
    "LAYOUTS",
    "PARSE_STATUSES",
    "PROMPTS",
    "STATUS_EMPTY_MASK",
    "STATUS_OK",
    "DetectionInteractionMapFn",
    "ImageGrid",
    "ImageTokenLayout",
    "InteractionExtractor",
    "InteractionMapFn",
    "MaskInteractionMapFn",
    "ParsedAnswer",
    "PromptTemplate",
    "TeacherInteraction",
    "answer_row_attention",
    "check_class_names",
    "contrast_map",
    "crop_interaction_map",
    "draw_boxes",
    "expand_to_square",
    "get_prompt",
    "image_token_layout",
    "interaction_map_fn",
    "mask_to_grid",
    "mask_to_interaction_map",
    "plot_interaction_maps",
    "precompute_interactions",
    "register_prompt",
    "weights_fingerprint",
]
