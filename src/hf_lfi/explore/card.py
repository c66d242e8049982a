"""The model card's figure: teacher vs student maps on the first images of a validation split, and the gates per
layer averaged over more of them (paper Fig. 11), written next to the card and described for its text."""

import os

from ..hub import dataset_name
from .explorer import MASK_TEACHER, Explorer, ExploreSettings
from .figures import plot_card_figure

CARD_FIGURE_NAME = "interaction_maps.png"


def write_card_figure(
    model, processor, settings: ExploreSettings, path: str | os.PathLike, num_images: int = 4, dpi: int = 100
) -> str:
    """Render the card figure of `model` on `settings.dataset` (split `settings.split`; teacher maps from its map
    column or a mask teacher, as `ExploreSettings` says) into `path`; the gates are averaged over the first
    `settings.num_images` rows. Returns the caption for the card's text.

    The maps are read with materialised attention (`analyse_image`); the model keeps its attention implementation.
    """
    explorer = Explorer(settings, model.eval(), processor)
    explorer.load_rows()
    explorer.compute_split_gates()
    shown = min(num_images, len(explorer.rows))
    analyses = [explorer.analyse_row(index) for index in range(shown)]
    rows = len(explorer.rows)
    plot_card_figure(analyses, explorer.split_gates, f"mean of {rows} {settings.split} images").savefig(path, dpi=dpi)
    if settings.teacher == MASK_TEACHER:
        teacher = f"a mask teacher built from the {settings.mask_column!r} masks"
    elif settings.map_column in explorer.rows.column_names:
        teacher = f"the dataset's {settings.map_column!r} column"
    else:
        teacher = "none recorded for this data"
    layer = model.config.interaction_layer_indices[-1]
    return (
        f"The first {shown} images of the {settings.split} split of {dataset_name(settings.dataset)}: the teacher's "
        f"map C_VLM ({teacher}), the student map of interaction layer {layer} (the map the alignment loss compares "
        "with the teacher's) and the original attention C_VFM of that layer, overlaid on each image. Below, the gates "
        f"per interaction layer (g1 weighs C_AGT, g2 C_VFM; mean and standard deviation over the first {rows} images, as "
        "the paper's Fig. 11)."
    )


__all__ = ["CARD_FIGURE_NAME", "write_card_figure"]
