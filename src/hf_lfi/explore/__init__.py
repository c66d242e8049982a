"""See what an I-model learned: its maps per layer and head next to the teacher's, its gates, its alignment with the
teacher and with masks (`analysis`), as figures (`figures`, also the model card's) and as a web page (`app`, Gradio:
`hf-lfi explore`; import it explicitly, it needs the `[explore]` extra)."""

from .analysis import ImageAnalysis, Prediction, TeacherMap, analyse_image, mean_gates
from .explorer import ExploreError, Explorer, ExploreSettings, load_baseline, load_student
from .figures import plot_card_figure, plot_gates, plot_maps, plot_view

__all__ = [
    "ExploreError",
    "ExploreSettings",
    "Explorer",
    "ImageAnalysis",
    "Prediction",
    "TeacherMap",
    "analyse_image",
    "load_baseline",
    "load_student",
    "mean_gates",
    "plot_card_figure",
    "plot_gates",
    "plot_maps",
    "plot_view",
]
