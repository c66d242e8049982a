"""The teacher side of LFI: interaction maps (paper Eq. 10-12) and the `datasets` map functions that precompute them."""

from .mapping import STATUS_EMPTY_MASK, STATUS_OK, MaskInteractionMapFn
from .maps import mask_to_grid, mask_to_interaction_map

__all__ = ["STATUS_EMPTY_MASK", "STATUS_OK", "MaskInteractionMapFn", "mask_to_grid", "mask_to_interaction_map"]
