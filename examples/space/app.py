"""`hf-lfi explore` as a Hugging Face Space (Gradio SDK): copy this folder into a Space and set its variables
(Settings > Variables). Each `hf-lfi explore` setting is a variable `HF_LFI_<NAME>` (`ExploreSettings`' fields):
`HF_LFI_MODEL` (an I-model's Hub id, required), `HF_LFI_DATASET` and `HF_LFI_SPLIT` (the images to show),
`HF_LFI_BASELINE` (a plain model to compare with), `HF_LFI_TEACHER` (`mask`, or a VLM's Hub id), and
`HF_LFI_NUM_IMAGES`, `HF_LFI_IMAGE_COLUMN`, `HF_LFI_LABEL_COLUMN`, `HF_LFI_MASK_COLUMN`, `HF_LFI_MAP_COLUMN`,
`HF_LFI_TEACHER_PROMPT`, `HF_LFI_MASK_TEACHER_GRID`."""

import dataclasses
import os

from hf_lfi.explore import ExploreSettings
from hf_lfi.explore.app import build_app


def settings_from_variables(environ) -> ExploreSettings:
    """The explore settings the Space's `HF_LFI_<NAME>` variables give; the others keep their defaults."""
    if not environ.get("HF_LFI_MODEL"):
        raise SystemExit(
            "Set the Space variable HF_LFI_MODEL to the Hub id of an hf_lfi I-model (Settings > Variables)."
        )
    values = {}
    for field in dataclasses.fields(ExploreSettings):
        variable = f"HF_LFI_{field.name.upper()}"
        value = environ.get(variable)
        if not value:
            continue
        if isinstance(field.default, int):
            try:
                value = int(value)
            except ValueError:
                raise SystemExit(f"The Space variable {variable} must be a whole number, got {value!r}.")
        values[field.name] = value
    return ExploreSettings(**values)


settings = settings_from_variables(os.environ)
demo = build_app(settings)

if __name__ == "__main__":
    demo.launch()
