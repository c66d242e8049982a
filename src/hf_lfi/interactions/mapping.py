"""`datasets` map functions that add teacher interaction maps to an image dataset (architecture.md decision 4).

The result has three columns the `InteractionTrainer` reads: `interaction_map` (float16, teacher grid),
`interaction_valid` (bool: False rows get no alignment loss) and `interaction_status` (why a row is invalid).
The map functions are picklable classes, so `Dataset.map` fingerprints and caches them.
"""

import numpy as np

from .maps import mask_to_interaction_map

STATUS_OK = "ok"
STATUS_EMPTY_MASK = "empty_mask"


class MaskInteractionMapFn:
    """Batched map function of a *mask teacher*: `ds.map(MaskInteractionMapFn(grid=(24, 24)), batched=True)`.

    Every row's segmentation mask becomes its teacher map (`mask_to_interaction_map`); a mask without foreground
    gives an all-zero map with `interaction_valid=False` and status `"empty_mask"`.
    """

    def __init__(
        self, mask_column: str = "mask", grid: tuple[int, int] = (24, 24), blur_sigma: float = 0.0, leak: float = 0.0
    ):
        self.mask_column = mask_column
        self.grid = tuple(grid)
        self.blur_sigma = blur_sigma
        self.leak = leak

    def __call__(self, batch: dict) -> dict:
        if self.mask_column not in batch:
            raise ValueError(f"The dataset has no mask column {self.mask_column!r} (columns: {sorted(batch)}).")
        maps = [mask_to_interaction_map(m, self.grid, self.blur_sigma, self.leak) for m in batch[self.mask_column]]
        valid = [bool(m.sum() > 0) for m in maps]
        return {
            "interaction_map": [m.numpy().astype(np.float16) for m in maps],
            "interaction_valid": valid,
            "interaction_status": [STATUS_OK if v else STATUS_EMPTY_MASK for v in valid],
        }


__all__ = ["STATUS_EMPTY_MASK", "STATUS_OK", "MaskInteractionMapFn"]
