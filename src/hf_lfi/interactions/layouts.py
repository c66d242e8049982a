"""Where a VLM puts an image's tokens: one small adapter per family maps the image-token positions of a prompt to
the (row, column) cells of the family's native grid, on which the interaction map C_VLM (Eq. 11/12) lives.

- `llava` (LLaVA-1.5): all image tokens, square; the image is padded to a square with the mean colour first
  (LLaVA's own `pad`) and the map cut back to the image.
- `llava_next`, `llava_onevision` (anyres): the base image's tokens (the whole image resized), square; the tiles
  and their newline tokens are skipped.
- `qwen2_vl`, `qwen2_5_vl`, `qwen3_vl`, `glm4v`: the merged patch grid of `image_grid_thw`, (h / merge) x
  (w / merge), any shape.
- `paligemma` (PaliGemma and PaliGemma-2), `gemma3`: all image tokens, square.
- `gemma4`: the pooled patch grid of `image_position_ids` (aspect ratio kept), any shape.
- `mistral3` (Pixtral vision): the merged patch grid of `image_sizes`, any shape; the row-closing tokens are not
  image tokens.
- `idefics3`, `smolvlm` (tiles + global image): the global image's tokens after pixel shuffle, square; the tiles
  are skipped.
- `internvl` (tiles + thumbnail): the last tile's tokens (the whole image resized) after pixel shuffle, square.
Other families than LLaVA-1.5 see the image through their processor's own preprocessing.

Every grid covers the whole image, like the student's resized input; a map keeps the grid's (rows, cols).
"""

import math
from dataclasses import dataclass

import torch

LAYOUTS: dict[str, type["ImageTokenLayout"]] = {}


@dataclass
class ImageGrid:
    """One prompt's image grid: `positions` (rows * cols,) are the sequence positions of its cells, row-major."""

    rows: int
    cols: int
    positions: torch.Tensor


class ImageTokenLayout:
    """All of an image's tokens form one square grid, row-major (LLaVA-1.5, PaliGemma, Gemma 3)."""

    pad_to_square = False  # whether the teacher sees the image padded to a square (LLaVA-1.5's own preprocessing)

    def __init__(self, model):
        self.config = model.config
        self.image_token_id = model.config.image_token_id

    def image_positions(self, input_ids: torch.Tensor) -> list[torch.Tensor]:
        """Per prompt, the positions of its image tokens; exactly one image per prompt."""
        positions = [(row == self.image_token_id).nonzero()[:, 0] for row in input_ids]
        if any(len(p) == 0 for p in positions):
            raise ValueError(f"A prompt holds no image token (id {self.image_token_id}): check the prompt format.")
        return positions

    def grids(self, inputs) -> list[ImageGrid]:
        grids = []
        for positions in self.image_positions(inputs["input_ids"]):
            side = math.isqrt(len(positions))
            if side * side != len(positions):
                raise ValueError(f"The teacher has {len(positions)} image tokens, not a square grid.")
            grids.append(ImageGrid(side, side, positions))
        return grids


class PaddedSquareLayout(ImageTokenLayout):
    """LLaVA-1.5: the image padded to a square before the processor sees it."""

    pad_to_square = True


class BaseImageLayout(ImageTokenLayout):
    """LLaVA-NeXT / OneVision (anyres): the image tokens start with the base image (the whole image resized to the
    vision tower's input, (image_size / patch_size)^2 tokens, no newline tokens); the tiles that follow are skipped."""

    def grids(self, inputs) -> list[ImageGrid]:
        vision = self.config.vision_config
        side = vision.image_size // vision.patch_size
        skip = 1 if getattr(self.config, "vision_feature_select_strategy", "default") == "full" else 0  # the CLS token
        return [ImageGrid(side, side, p[skip : skip + side * side]) for p in self.image_positions(inputs["input_ids"])]


class MergedPatchLayout(ImageTokenLayout):
    """Qwen2-VL / Qwen2.5-VL: an image of `image_grid_thw` = (1, h, w) patches gives (h / m) x (w / m) tokens,
    m = `spatial_merge_size`, row-major."""

    def grids(self, inputs) -> list[ImageGrid]:
        merge = self.config.vision_config.spatial_merge_size
        grids = []
        shapes = inputs["image_grid_thw"].tolist()
        for positions, (frames, height, width) in zip(self.image_positions(inputs["input_ids"]), shapes):
            rows, cols = height // merge, width // merge
            if frames != 1 or rows * cols != len(positions):
                raise ValueError(
                    f"image_grid_thw {(frames, height, width)} does not match the prompt's {len(positions)} image tokens."
                )
            grids.append(ImageGrid(rows, cols, positions))
        return grids


class PixelSizeLayout(ImageTokenLayout):
    """Mistral 3 (Pixtral vision): the resized image of `image_sizes` = (h, w) pixels gives (h / s) x (w / s) tokens,
    s = patch_size * `spatial_merge_size`, row-major; the [IMG_BREAK] / [IMG_END] token closing each row is not an
    image token."""

    def grids(self, inputs) -> list[ImageGrid]:
        step = self.config.vision_config.patch_size * self.config.spatial_merge_size
        grids = []
        for positions, (height, width) in zip(
            self.image_positions(inputs["input_ids"]), inputs["image_sizes"].tolist()
        ):
            rows, cols = height // step, width // step
            if rows * cols != len(positions):
                raise ValueError(
                    f"A {height} x {width} image in {step}-pixel tokens does not match the prompt's {len(positions)} "
                    "image tokens."
                )
            grids.append(ImageGrid(rows, cols, positions))
        return grids


class PooledPatchLayout(ImageTokenLayout):
    """Gemma 4: the image is resized (aspect ratio kept) to whole k x k blocks of patches, k = `pooling_kernel_size`,
    and each token averages one block, row-major; `image_position_ids` holds every patch's (x, y) (-1: padding)."""

    def grids(self, inputs) -> list[ImageGrid]:
        kernel = self.config.vision_config.pooling_kernel_size
        extents = (inputs["image_position_ids"].amax(dim=1) + 1).tolist()  # per image: patch columns, patch rows
        grids = []
        for positions, (width, height) in zip(self.image_positions(inputs["input_ids"]), extents):
            rows, cols = height // kernel, width // kernel
            if rows * cols != len(positions):
                raise ValueError(
                    f"A {height} x {width}-patch image pooled by {kernel} does not match the prompt's "
                    f"{len(positions)} image tokens."
                )
            grids.append(ImageGrid(rows, cols, positions))
        return grids


class GlobalImageLayout(ImageTokenLayout):
    """Idefics3 / SmolVLM (tiles + global image): the global image (the whole image resized to the vision tower's
    square input) comes last, (image_size / patch_size / scale_factor)^2 tokens after pixel shuffle, row-major;
    the tiles before it are skipped."""

    def side(self) -> int:
        vision = self.config.vision_config
        return vision.image_size // vision.patch_size // self.config.scale_factor

    def grids(self, inputs) -> list[ImageGrid]:
        side = self.side()
        return [ImageGrid(side, side, p[-side * side :]) for p in self.image_positions(inputs["input_ids"])]


class ThumbnailLayout(GlobalImageLayout):
    """InternVL (tiles + thumbnail): the last tile is the whole image resized (the thumbnail after several tiles, the
    only tile otherwise), (image_size / patch_size * downsample_ratio)^2 tokens after pixel shuffle, row-major."""

    def side(self) -> int:
        vision = self.config.vision_config
        return round(vision.image_size[0] / vision.patch_size[0] * self.config.downsample_ratio)


LAYOUTS.update(
    {
        "llava": PaddedSquareLayout,
        "llava_next": BaseImageLayout,
        "llava_onevision": BaseImageLayout,
        "qwen2_vl": MergedPatchLayout,
        "qwen2_5_vl": MergedPatchLayout,
        "qwen3_vl": MergedPatchLayout,
        "glm4v": MergedPatchLayout,
        "paligemma": ImageTokenLayout,
        "gemma3": ImageTokenLayout,
        "gemma4": PooledPatchLayout,
        "idefics3": GlobalImageLayout,
        "smolvlm": GlobalImageLayout,
        "internvl": ThumbnailLayout,
        "mistral3": PixelSizeLayout,
    }
)


def image_token_layout(model) -> ImageTokenLayout:
    """The layout adapter of `model`'s family; a `ValueError` listing the supported families otherwise."""
    model_type = model.config.model_type
    if model_type not in LAYOUTS:
        raise ValueError(f"No image-token layout for VLM family {model_type!r}; supported: {sorted(LAYOUTS)}.")
    return LAYOUTS[model_type](model)


__all__ = [
    "LAYOUTS",
    "BaseImageLayout",
    "GlobalImageLayout",
    "ImageGrid",
    "ImageTokenLayout",
    "MergedPatchLayout",
    "PooledPatchLayout",
    "ThumbnailLayout",
    "PaddedSquareLayout",
    "PixelSizeLayout",
    "image_token_layout",
]
