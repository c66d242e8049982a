"""`hf-lfi explore` as a Hugging Face Space (Gradio SDK): copy this folder into a Space and set its variables
(Settings > Variables): `HF_LFI_MODEL` (an I-model's Hub id, required), `HF_LFI_DATASET` and `HF_LFI_SPLIT` (the
images to show), `HF_LFI_BASELINE` (a plain model to compare with), `HF_LFI_TEACHER` (`mask`, or a VLM's Hub id)."""

import os

from hf_lfi.explore import ExploreSettings
from hf_lfi.explore.app import build_app

model = os.environ.get("HF_LFI_MODEL")
if not model:
    raise SystemExit("Set the Space variable HF_LFI_MODEL to the Hub id of an hf_lfi I-model (Settings > Variables).")

demo = build_app(
    ExploreSettings(
        model,
        dataset=os.environ.get("HF_LFI_DATASET"),
        split=os.environ.get("HF_LFI_SPLIT", "validation"),
        baseline=os.environ.get("HF_LFI_BASELINE"),
        teacher=os.environ.get("HF_LFI_TEACHER"),
    )
)

if __name__ == "__main__":
    demo.launch()
