"""The pieces `hf-lfi explore` works on, loaded once: the I-model and its image processor, an optional baseline, a
few rows of a dataset split with their teacher maps (the dataset's map column, a mask teacher, or a VLM asked online
through `InteractionExtractor`), and the gates averaged over those rows."""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from datasets import ClassLabel, Dataset
from datasets import Image as ImageFeature
from PIL import Image, UnidentifiedImageError
from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageTextToText, AutoProcessor

from .. import metrics
from ..interactions import InteractionExtractor, MaskInteractionMapFn
from ..modeling.name_or_path import resolve_name_or_path
from ..students import CLASSIFICATION, STUDENTS, Task, student_for_model_type, task_of_model
from ..training.data import load_image_dataset
from .analysis import ImageAnalysis, TeacherMap, analyse_image, interaction_attention_modules, mean_gates

MASK_TEACHER = "mask"


class ExploreError(ValueError):
    """Input the explorer cannot work with; the message says what is wrong and what to do."""


@dataclass
class ExploreSettings:
    """What to explore (the `hf-lfi explore` arguments).

    Args:
        model: an I-model folder (a training run's output folder works) or Hub id.
        dataset: a dataset folder or Hub id (`training.load_image_dataset`); None: uploaded images only.
        split: the split whose first `num_images` rows are shown.
        baseline: a plain model (folder or Hub id) whose prediction is shown next to the I-model's.
        teacher: None: the dataset's `map_column`; `"mask"`: a mask teacher from `mask_column`
            (`MaskInteractionMapFn`, `mask_teacher_grid` cells a side); otherwise a VLM (folder or Hub id) asked
            online with `teacher_prompt` on the image shown.
    """

    model: str
    dataset: str | None = None
    split: str = "validation"
    baseline: str | None = None
    teacher: str | None = None
    num_images: int = 32
    image_column: str = "image"
    label_column: str = "label"
    mask_column: str = "mask"
    map_column: str = "interaction_map"
    teacher_prompt: str = "classification_fg_bg"
    mask_teacher_grid: int = 24


def _config(name: str):
    """(resolved name, config) of a folder or Hub id."""
    try:
        name = resolve_name_or_path(name)
        return name, AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as error:
        raise ExploreError(f"Cannot load a model config from {name!r}: {error}") from None


def _processor(name: str):
    try:
        return AutoImageProcessor.from_pretrained(name)
    except OSError:
        raise ExploreError(
            f"{name} has no image processor (preprocessor_config.json): save the model's processor next to it "
            "(`processor.save_pretrained(folder)`)."
        ) from None


def load_student(name: str):
    """(I-model, image processor) of a folder or Hub id: the student registry's task model that its config's
    `architectures` names (else the student's first task), with materialised attention (the maps the page shows)."""
    name, config = _config(name)
    student = student_for_model_type(config.model_type)
    if student is None:
        raise ExploreError(
            f"{name} is a {config.model_type!r} model, not an hf_lfi I-model: explore an I-model "
            f"({', '.join(s.model_type for s in STUDENTS)}) and pass a plain model as --baseline."
        )
    named = [cls for cls in student.task_models.values() if cls.__name__ in (config.architectures or [])]
    model_class = (named or [student.model_class()])[0]
    return model_class.from_pretrained(name, attn_implementation="eager").eval(), _processor(name)


def load_baseline(name: str, task: Task):
    """(model, image processor) of a folder or Hub id, through the Auto class of the I-model's task."""
    name, _ = _config(name)
    return task.auto().from_pretrained(name).eval(), _processor(name)


class Explorer:
    """The loaded model, baseline, dataset rows and teacher; `analyse_row` / `analyse_upload` give what the page
    shows for one image. Build it with `Explorer.load(settings)`."""

    def __init__(self, settings: ExploreSettings, model, processor, baseline=None, baseline_processor=None):
        self.settings = settings
        self.model, self.processor = model, processor
        self.baseline, self.baseline_processor = baseline, baseline_processor
        self.rows: Dataset | None = None
        self.extractor: InteractionExtractor | None = None
        self.split_gates: np.ndarray | None = None
        self.notes: list[str] = []  # what the page should say about missing pieces (no teacher maps, no masks)
        self._online_teacher: dict[int, TeacherMap] = {}
        self._alignment_metric = None

    @classmethod
    def load(cls, settings: ExploreSettings, progress: Callable[[float, str], None] | None = None) -> "Explorer":
        """Load every piece, reporting `progress(fraction, what)`."""
        progress = progress or (lambda fraction, what: None)
        progress(0.0, f"loading {settings.model}")
        model, processor = load_student(settings.model)
        baseline = baseline_processor = None
        if settings.baseline:
            progress(0.2, f"loading the baseline {settings.baseline}")
            baseline, baseline_processor = load_baseline(settings.baseline, task_of_model(type(model)))
        explorer = cls(settings, model, processor, baseline, baseline_processor)
        if settings.dataset:
            progress(0.35, f"loading {settings.dataset} ({settings.split})")
            explorer.load_rows()
        if settings.teacher not in (None, MASK_TEACHER):
            progress(0.5, f"loading the teacher {settings.teacher}")
            explorer.load_vlm_teacher()
        if explorer.rows is not None:
            explorer.compute_split_gates(
                lambda done, total: progress(0.6 + 0.4 * done / total, f"gates of {done}/{total} images")
            )
        progress(1.0, "ready")
        return explorer

    # ------------------------------------------------------------------------------------------------- data
    def load_rows(self) -> None:
        """The first `num_images` rows of the split, with the mask teacher's maps if it is the teacher."""
        settings = self.settings
        try:
            splits = load_image_dataset(settings.dataset)
        except (OSError, ValueError) as error:
            raise ExploreError(f"Cannot load the dataset {settings.dataset!r}: {error}") from None
        if settings.split not in splits:
            raise ExploreError(f"{settings.dataset} has no split {settings.split!r} (splits: {list(splits)}).")
        split = splits[settings.split]
        if not isinstance(split.features.get(settings.image_column), ImageFeature):
            raise ExploreError(
                f"{settings.dataset} ({settings.split}) has no image column {settings.image_column!r} (columns: "
                f"{split.column_names}): pass the column that holds the images (--image-column)."
            )
        rows = split.select(range(min(settings.num_images, len(split))))
        if len(rows) == 0:
            raise ExploreError(f"{settings.dataset} ({settings.split}) has no rows.")
        if settings.teacher == MASK_TEACHER:
            if settings.mask_column not in rows.column_names:
                raise ExploreError(
                    f"The mask teacher needs a mask column {settings.mask_column!r}; {settings.dataset} has "
                    f"{rows.column_names}."
                )
            grid = (settings.mask_teacher_grid,) * 2
            rows = rows.map(MaskInteractionMapFn(settings.mask_column, grid), batched=True)
        elif settings.teacher is None and settings.map_column not in rows.column_names:
            self.notes.append(
                f"{settings.dataset} has no teacher maps (no {settings.map_column!r} column): pass --teacher mask (a "
                "mask teacher) or a VLM."
            )
        if settings.mask_column not in rows.column_names:
            self.notes.append(f"No {settings.mask_column!r} column: no closeness to masks.")
        self.rows = rows

    def compute_split_gates(self, progress: Callable[[int, int], None] | None = None) -> None:
        """The gates per layer averaged over the rows (`mean_gates`), reporting `progress(done, total)`."""
        self.split_gates = mean_gates(
            self.model, self.processor, self.rows[self.settings.image_column], progress=progress
        )

    def load_vlm_teacher(self) -> None:
        """The online teacher: a VLM and its processor, asked through `InteractionExtractor`."""
        if task_of_model(type(self.model)).name != CLASSIFICATION:
            raise ExploreError(
                "An online VLM teacher asks a classification question: for a detector, precompute detection maps "
                "(hf-lfi precompute, Eq. 12) and explore that dataset."
            )
        name = self.settings.teacher
        try:
            name = resolve_name_or_path(name)
            teacher = AutoModelForImageTextToText.from_pretrained(name, dtype="auto").eval()
            processor = AutoProcessor.from_pretrained(name)
            self.extractor = InteractionExtractor(teacher, processor, prompt=self.settings.teacher_prompt)
        except (OSError, ValueError) as error:  # a missing or unknown model, an unknown prompt, an unusable VLM
            raise ExploreError(f"Cannot load the VLM teacher {name!r}: {error}") from None

    @property
    def num_heads(self) -> int:
        """The attention heads of the interaction layers."""
        attention = interaction_attention_modules(self.model)[0]
        return attention.q_proj.out_features // attention.head_dim

    def label(self, index: int) -> str | None:
        """The class name of a row, if the dataset has labels."""
        column = self.settings.label_column
        if column not in self.rows.column_names:
            return None
        value = self.rows[index][column]
        feature = self.rows.features[column]
        return feature.int2str(value) if isinstance(feature, ClassLabel) else str(value)

    def teacher_status(self, index: int) -> str:
        """What is known of a row's teacher map before it is analysed (the dataset's status column, or the online
        teacher's status once asked)."""
        if index in self._online_teacher:
            return self._online_teacher[index].status
        if self.extractor is not None:
            return "asked on view"
        row_columns = self.rows.column_names
        if self.settings.map_column not in row_columns:
            return "none"
        return str(self.rows[index]["interaction_status"]) if "interaction_status" in row_columns else "map"

    def thumbnails(self) -> list[tuple[Image.Image, str]]:
        """(image, caption) per row: index, label and teacher status."""
        if self.rows is None:
            return []
        items = []
        for index, image in enumerate(self.rows[self.settings.image_column]):
            parts = [f"#{index}", self.label(index), f"teacher: {self.teacher_status(index)}"]
            items.append((image.convert("RGB"), " · ".join(p for p in parts if p)))
        return items

    # ---------------------------------------------------------------------------------------------- analysis
    def _teacher_of_row(self, index: int, image: Image.Image) -> TeacherMap | None:
        row = self.rows[index]
        if self.extractor is not None:
            return self._ask_teacher(image, index)
        if self.settings.map_column not in row:
            return None
        interaction_map = np.asarray(row[self.settings.map_column], dtype=np.float32)
        valid = bool(row.get("interaction_valid", interaction_map.sum() > 0))
        source = "mask teacher" if self.settings.teacher == MASK_TEACHER else f"column {self.settings.map_column!r}"
        return TeacherMap(interaction_map, str(row.get("interaction_status", "ok")), valid, source)

    def _ask_teacher(self, image: Image.Image, index: int | None = None) -> TeacherMap:
        if index is not None and index in self._online_teacher:
            return self._online_teacher[index]
        config = self.model.config
        class_names = [config.id2label[i] for i in range(config.num_labels)]
        result = self.extractor([image], class_names=class_names)[0]
        teacher = TeacherMap(
            result.interaction_map.astype(np.float32),
            result.status,
            result.valid,
            f"{self.settings.teacher} (online): {result.answer!r}",
        )
        if index is not None:
            self._online_teacher[index] = teacher
        return teacher

    def _analyse(self, image: Image.Image, title: str, teacher: TeacherMap | None, mask) -> ImageAnalysis:
        if mask is not None and self._alignment_metric is None:
            self._alignment_metric = metrics.load("interaction_alignment")
        return analyse_image(
            self.model,
            self.processor,
            image,
            title,
            teacher,
            mask,
            self.baseline,
            self.baseline_processor,
            self._alignment_metric,
        )

    def analyse_row(self, index: int) -> ImageAnalysis:
        """The analysis of the `index`-th row shown (asking the online teacher first, if there is one)."""
        if self.rows is None or not 0 <= index < len(self.rows):
            raise ExploreError(f"No row {index}: {0 if self.rows is None else len(self.rows)} rows are shown.")
        row = self.rows[index]
        image = row[self.settings.image_column].convert("RGB")
        label = self.label(index)
        title = f"{self.settings.split} #{index}" + (f" ({label})" if label else "")
        return self._analyse(image, title, self._teacher_of_row(index, image), row.get(self.settings.mask_column))

    def analyse_upload(self, path: str | Path) -> ImageAnalysis:
        """The analysis of an uploaded image file (the online teacher's map, if there is one; no mask)."""
        try:
            with Image.open(path) as opened:
                image = opened.convert("RGB")
        except (UnidentifiedImageError, OSError) as error:  # PIL's message names the server's copy of the file
            reason = str(error).replace(f" {str(path)!r}", "").replace(str(path), Path(path).name)
            raise ExploreError(f"{Path(path).name} is not an image PIL can read ({reason}).") from None
        teacher = self._ask_teacher(image) if self.extractor is not None else None
        return self._analyse(image, Path(path).name, teacher, None)


__all__ = ["MASK_TEACHER", "ExploreError", "ExploreSettings", "Explorer", "load_baseline", "load_student"]
