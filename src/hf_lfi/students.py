"""The student registry: one row per I-model family.

Everything that lists the students reads this table: the Auto and pipeline registration on `import hf_lfi`, the
recipe's `--method` / `--task` choices and its model builder, the image processor a run saves, `hf-lfi publish` and
the model cards (Auto class, pipeline tag), the presets and the parametrised tests. What a student needs for
conversion (its source classes, weight renames, source `model_type`s) stays on its model classes, where the remote
code of a saved checkpoint finds it too.

Adding a student = its `configuration_*.py` / `modeling_*.py` files and one `Student` row here.
"""

from dataclasses import dataclass, field

import transformers
from transformers.models.auto import modeling_auto

from .modeling import (
    IConditionalDetrConfig,
    IConditionalDetrForObjectDetection,
    IConditionalDetrModel,
    IDetrConfig,
    IDetrForObjectDetection,
    IDetrForSegmentation,
    IDetrModel,
    IDinov2Config,
    IDinov2ForImageClassification,
    IDinov2Model,
    ISiglipConfig,
    ISiglipForImageClassification,
    ISiglipVisionModel,
    IViTConfig,
    IViTForImageClassification,
    IViTModel,
)


@dataclass(frozen=True)
class Task:
    """A task a student model does: the Auto class that loads it, the Hub pipeline tag, the table of model names the
    task's `pipeline` checks a model against (`transformers.models.auto.modeling_auto`), and the metrics its model
    cards report (a regular expression over the recipe's metric names)."""

    name: str
    auto_class: str
    pipeline_tag: str
    pipeline_models: str
    card_metrics: str

    def auto(self) -> type:
        return getattr(transformers, self.auto_class)


CLASSIFICATION, DETECTION, SEGMENTATION = "image-classification", "object-detection", "segmentation"
TASKS = {
    task.name: task
    for task in (
        Task(
            CLASSIFICATION,
            "AutoModelForImageClassification",
            "image-classification",
            "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES",
            r"accuracy|top\d+_accuracy",
        ),
        Task(
            DETECTION,
            "AutoModelForObjectDetection",
            "object-detection",
            "MODEL_FOR_OBJECT_DETECTION_MAPPING_NAMES",
            r"map|map_50|map_75",
        ),
        Task(
            SEGMENTATION,
            "AutoModelForImageSegmentation",
            "image-segmentation",
            "MODEL_FOR_IMAGE_SEGMENTATION_MAPPING_NAMES",
            r"map|map_50|mask_map|mask_map_50|mask_map_75",
        ),
    )
}


@dataclass(frozen=True)
class Student:
    """One I-model family.

    Args:
        method: the recipe's `--method` that trains it with the alignment loss.
        baseline: the `--method` that trains its source model with the same settings.
        config_class: its configuration (`model_type` registered with `AutoConfig`).
        base_model: the headless model (`AutoModel`).
        task_models: task name (`TASKS`) -> the I-model of that task; the first is the default task.
        image_processor: the `transformers` image processor class a run saves with the model ("Pil" is appended
            where torchvision is absent).
        paper_results: task -> the paper's numbers for this student, quoted on its model cards.
    """

    method: str
    baseline: str
    config_class: type
    base_model: type
    task_models: dict[str, type]
    image_processor: str
    paper_results: dict[str, str] = field(default_factory=dict)

    @property
    def model_type(self) -> str:
        return self.config_class.model_type

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.task_models)

    def model_class(self, task: str | None = None) -> type:
        """The I-model of `task` (default: the student's first task)."""
        if task is None:
            return next(iter(self.task_models.values()))
        if task not in self.task_models:
            raise ValueError(f"--method {self.method} does not do {task}; it does {', '.join(self.tasks)}.")
        return self.task_models[task]

    def task_of(self, model_class: type) -> str:
        return next(task for task, cls in self.task_models.items() if cls is model_class)

    def baseline_class(self, task: str | None = None) -> type:
        """The `transformers` model the baseline method trains for `task` (the I-model's first source class)."""
        return next(iter(self.model_class(task)._source_classes))

    @property
    def source_model_types(self) -> tuple[str, ...]:
        """The `model_type`s of the checkpoints its I-models convert."""
        return tuple(dict.fromkeys(t for cls in self.task_models.values() for t in cls._source_model_types))


STUDENTS = (
    Student(
        "ivit",
        "vit",
        IViTConfig,
        IViTModel,
        {CLASSIFICATION: IViTForImageClassification},
        "ViTImageProcessor",
        {
            CLASSIFICATION: "TinyImageNet top-1 (Table 1): ViT-S/16 79.94 -> I-ViT-S/16 81.52, ViT-B/16 80.24 -> "
            "I-ViT-B/16 82.14, ViT-L/16 87.83 -> I-ViT-L/16 91.08."
        },
    ),
    Student(
        "idinov2",
        "dinov2",
        IDinov2Config,
        IDinov2Model,
        {CLASSIFICATION: IDinov2ForImageClassification},
        "ViTImageProcessor",
    ),
    Student(
        "isiglip",
        "siglip",
        ISiglipConfig,
        ISiglipVisionModel,
        {CLASSIFICATION: ISiglipForImageClassification},
        "SiglipImageProcessor",
    ),
    Student(
        "idetr",
        "detr",
        IDetrConfig,
        IDetrModel,
        {DETECTION: IDetrForObjectDetection, SEGMENTATION: IDetrForSegmentation},
        "DetrImageProcessor",
        {
            DETECTION: "COCO (DETR-R50, 50 epochs): box mAP 42.0 -> 43.6 with under 1 % more parameters.",
            SEGMENTATION: "COCO instance segmentation (Table 6, DETR-R50, 25 epochs): mask AP 31.1 -> 33.5.",
        },
    ),
    Student(
        "icdetr",
        "cdetr",
        IConditionalDetrConfig,
        IConditionalDetrModel,
        {DETECTION: IConditionalDetrForObjectDetection},
        "ConditionalDetrImageProcessor",
        {DETECTION: "Few-shot VOC (Conditional-DETR, Table 7): 38.6 -> 40.9."},
    ),
)
METHODS = tuple(method for student in STUDENTS for method in (student.method, student.baseline))


def student_for_method(method: str) -> Student:
    """The student a `--method` trains (its interaction method or its baseline)."""
    for student in STUDENTS:
        if method in (student.method, student.baseline):
            return student
    raise ValueError(f"Unknown method {method!r}; choose one of {list(METHODS)}.")


def student_for_model_type(model_type: str) -> Student | None:
    """The student whose I-models have this `model_type`, or None."""
    return next((student for student in STUDENTS if student.model_type == model_type), None)


def student_of(config) -> Student:
    """The student of an I-configuration (or of an I-model's configuration)."""
    for student in STUDENTS:
        if isinstance(config, student.config_class):
            return student
    raise ValueError(f"{type(config).__name__} is not an hf_lfi interaction configuration.")


def interaction_model_class(config) -> type:
    """The default task model of an I-configuration (`IViTConfig` -> `IViTForImageClassification`, ...)."""
    return student_of(config).model_class()


def task_of_model(model_class: type) -> Task:
    """The task of an I-model class (`IDetrForSegmentation` -> segmentation)."""
    for student in STUDENTS:
        for task, cls in student.task_models.items():
            if cls is model_class:
                return TASKS[task]
    raise ValueError(f"{model_class.__name__} is not an hf_lfi task model.")


def methods_of_task(task: str) -> tuple[str, ...]:
    """The methods that train a model of `task`, interaction methods first."""
    students = [student for student in STUDENTS if task in student.task_models]
    return tuple(s.method for s in students) + tuple(s.baseline for s in students)


def register_auto_classes() -> None:
    """Register every student with the Auto classes (pip users), mark its classes for `register_for_auto_class`
    (`auto_map` in saved configs: remote code without the package) and add its task models to the tables of names
    the `pipeline`s check models against."""
    for student in STUDENTS:
        transformers.AutoConfig.register(student.model_type, student.config_class, exist_ok=True)
        transformers.AutoModel.register(student.config_class, student.base_model, exist_ok=True)
        student.config_class.register_for_auto_class()
        student.base_model.register_for_auto_class("AutoModel")
        for task_name, model_class in student.task_models.items():
            task = TASKS[task_name]
            task.auto().register(student.config_class, model_class, exist_ok=True)
            model_class.register_for_auto_class(task.auto_class)
            getattr(modeling_auto, task.pipeline_models).setdefault(student.model_type, model_class.__name__)


__all__ = [
    "METHODS",
    "STUDENTS",
    "TASKS",
    "Student",
    "Task",
    "interaction_model_class",
    "methods_of_task",
    "register_auto_classes",
    "student_for_method",
    "student_for_model_type",
    "student_of",
    "task_of_model",
]
