"""The recipe's arguments: `ModelArguments`, `DataArguments` and `InteractionTrainingArguments`, read from the
command line and from a config file (`--config NAME_OR_PATH`: a shipped config by name or a YAML/JSON file of flag
names), command-line flags taking precedence."""

import dataclasses
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from transformers import HfArgumentParser

from ..presets import ALL_PRESET_NAMES
from ..students import CLASSIFICATION, METHODS, SEGMENTATION, TASKS, methods_of_task, student_for_method
from ..training.arguments import InteractionTrainingArguments

CONFIGS_DIR = Path(__file__).parent / "configs"
TEACHERS = ("dataset", "mask", "vlm", "llava")  # llava: the former name of vlm


def shipped_configs() -> list[str]:
    """The names of the configs shipped with the package (`--config NAME`)."""
    return sorted(path.stem for path in CONFIGS_DIR.glob("*.yaml"))


def config_path(name_or_path: str) -> Path:
    """The file of `--config`: an existing file, else the shipped config of that name (with or without `.yaml`)."""
    if os.path.isfile(name_or_path):
        return Path(name_or_path)
    shipped = CONFIGS_DIR / f"{Path(name_or_path).name.removesuffix('.yaml')}.yaml"
    if shipped.is_file() and os.sep not in name_or_path:
        return shipped
    raise FileNotFoundError(
        f"--config {name_or_path}: no such file, and no shipped config of that name (shipped: "
        f"{', '.join(shipped_configs())})."
    )


@dataclass
class ModelArguments:
    method: str | None = field(
        default=None,
        metadata={
            "choices": METHODS,
            "help": "The student trained with interaction queries and the alignment loss ('ivit', 'idinov2', 'isiglip': "
            "image classification; 'idetr': object detection or, with --task segmentation, instance segmentation; "
            "'icdetr': Conditional-DETR object detection), or its baseline with the same settings ('vit', 'dinov2', "
            "'siglip', 'detr', 'cdetr'). Default: the first student of --task, else 'ivit'.",
        },
    )
    task: str | None = field(
        default=None,
        metadata={
            "choices": tuple(TASKS),
            "help": "The task trained: 'image-classification', 'object-detection' (COCO-format data) or "
            "'segmentation' (instance segmentation, DETR's mask head). Default: the method's first task.",
        },
    )
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "A checkpoint (Hub id or folder) of the method's source model (ViT, DINOv2, SigLIP, DETR, "
            "Conditional-DETR) to convert (backbone frozen, paper protocol) or to train as the baseline, or an "
            "I-model checkpoint to continue. Unset: train from scratch (paper Table 2)."
        },
    )
    config_name: str | None = field(
        default=None,
        metadata={
            "help": f"From scratch: a preset ({', '.join(ALL_PRESET_NAMES)}) or a config folder / Hub id. Unset: the "
            "configuration class's defaults plus --config_overrides."
        },
    )
    config_overrides: str | None = field(
        default=None,
        metadata={"help": "Config fields to change, e.g. 'hidden_size=64,num_hidden_layers=2,image_size=64'."},
    )
    freeze_backbone: bool | None = field(
        default=None,
        metadata={
            "help": "Train only interaction queries, gates and head (a baseline: only its head, a linear probe of a "
            "pretrained backbone). Default: True when converting, False otherwise."
        },
    )
    image_processor_name: str | None = field(
        default=None,
        metadata={"help": "Image processor to use (default: the checkpoint's, else the student's for the config)."},
    )
    detection_shortest_edge: int = field(
        default=800, metadata={"help": "Detection: resize the shortest image edge to this."}
    )
    detection_longest_edge: int = field(default=1333, metadata={"help": "Detection: cap on the longest image edge."})
    lora_rank: int = field(
        default=0, metadata={"help": "> 0: LoRA of this rank on the backbone's q/v projections (peft)."}
    )
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout."})

    def __post_init__(self):
        """`--task` alone picks its first student; `--method` alone its student's first task."""
        if self.method is None:
            self.method = methods_of_task(self.task)[0] if self.task else "ivit"
        student = student_for_method(self.method)
        if self.task is None:
            self.task = student.tasks[0]
        elif self.task not in student.tasks:
            raise ValueError(
                f"--method {self.method} does not do {self.task}; use one of {list(methods_of_task(self.task))}."
            )


@dataclass
class DataArguments:
    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Hub id, local folder (save_to_disk, parquet files per split, imagefolder) or a data set shipped "
            "with the package (hf_lfi:emoji-shift-demo)."
        },
    )
    dataset_config_name: str | None = field(
        default=None, metadata={"help": "The configuration of a Hub dataset that has several (default: its default)."}
    )
    interaction_dataset: str | None = field(
        default=None,
        metadata={
            "help": "Hub id or folder of an interaction dataset (images + teacher maps) to train on (--teacher dataset)."
        },
    )
    teacher: str = field(
        default="dataset",
        metadata={
            "choices": TEACHERS,
            "help": "Teacher maps from the dataset's map column ('dataset'), a mask teacher built from `mask_column` "
            "('mask'), or a VLM teacher run online on every training batch ('vlm', alias 'llava': any "
            "AutoModelForImageTextToText family the extractor supports, `teacher_model_name_or_path`).",
        },
    )
    teacher_model_name_or_path: str | None = field(
        default=None, metadata={"help": "The online VLM teacher (Hub id or folder)."}
    )
    teacher_prompt: str = field(default="classification_fg_bg", metadata={"help": "Prompt of the online teacher."})
    teacher_max_new_tokens: int = field(default=64, metadata={"help": "Answer length limit of the online teacher."})
    mask_column: str = field(default="mask", metadata={"help": "Segmentation mask column of the mask teacher."})
    mask_teacher_grid: int = field(default=24, metadata={"help": "Grid of the mask teacher's maps (LLaVA-1.5: 24)."})
    mask_teacher_blur: float = field(
        default=0.0, metadata={"help": "Gaussian blur of the mask teacher, in grid cells."}
    )
    mask_teacher_leak: float = field(
        default=0.0, metadata={"help": "Share of the mask teacher's mass leaked to the background."}
    )
    mask_teacher_wrong: float = field(
        default=0.0,
        metadata={"help": "Share of rows whose mask-teacher map points at another row's object instead of their own."},
    )
    image_column: str = field(default="image", metadata={"help": "Image column."})
    label_column: str = field(
        default="label", metadata={"help": "Class-id column (a ClassLabel gives the label names)."}
    )
    objects_column: str = field(
        default="objects", metadata={"help": "Detection: column of {'bbox': COCO x, y, w, h boxes, 'category': ids}."}
    )
    bbox_column: str | None = field(
        default=None,
        metadata={
            "help": "Detection from a single-object dataset: build `objects_column` from this box column (COCO x, y, w, "
            "h) and `label_column`, e.g. emoji-shift's 'bbox'."
        },
    )
    instance_mask_column: str | None = field(
        default=None,
        metadata={
            "help": "Segmentation from a single-object dataset: this mask-image column (foreground > 0, e.g. "
            "emoji-shift's 'mask') is the row's one instance mask. Unset: the objects' COCO 'segmentation'."
        },
    )
    train_split: str = field(default="train", metadata={"help": "Training split."})
    eval_split: str | None = field(default="validation", metadata={"help": "Split evaluated during training."})
    test_splits: list[str] = field(default_factory=list, metadata={"help": "Splits evaluated once after training."})
    data_ratio: float = field(default=1.0, metadata={"help": "Share of the training split used (paper Table 2)."})
    few_shot: int | None = field(
        default=None, metadata={"help": "Detection: train on a seeded k-shot subset (every category k objects)."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Cap on training rows (before data_ratio)."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Cap on rows of every evaluated split."})
    train_augmentation: bool = field(
        default=True, metadata={"help": "Random resized crop + horizontal flip of images and their teacher maps."}
    )
    crop_scale_min: float = field(default=0.08, metadata={"help": "Smallest area share of the random resized crop."})
    top_k: int = field(default=5, metadata={"help": "k of the reported top-k accuracy."})

    def __post_init__(self):
        at_least_one = {
            "mask_teacher_grid": self.mask_teacher_grid,
            "max_train_samples": self.max_train_samples,
            "max_eval_samples": self.max_eval_samples,
            "top_k": self.top_k,
            "few_shot": self.few_shot,
        }
        for name, value in at_least_one.items():
            if value is not None and value < 1:
                raise ValueError(f"--{name} must be >= 1, got {value}.")
        if not 0 < self.crop_scale_min <= 1:
            raise ValueError(f"--crop_scale_min is an area share in (0, 1], got {self.crop_scale_min}.")
        if self.teacher == "llava":
            self.teacher = "vlm"
        if self.interaction_dataset and self.teacher != "dataset":
            raise ValueError(
                f"--interaction_dataset {self.interaction_dataset} holds precomputed teacher maps, but --teacher is "
                f"{self.teacher!r} (maps from {'the masks' if self.teacher == 'mask' else 'an online VLM'}): pass "
                "--teacher dataset to train on its maps, or drop --interaction_dataset."
            )
        if self.teacher == "vlm" and self.teacher_model_name_or_path is None:
            raise ValueError("--teacher vlm needs --teacher_model_name_or_path (a VLM checkpoint: Hub id or folder).")


CONFIG_HELP = (
    "A YAML/JSON file of flag names and values, or the name of a config shipped with the package ({names}); flags "
    "given on the command line override it."
)


def build_parser() -> HfArgumentParser:
    parser = HfArgumentParser((ModelArguments, DataArguments, InteractionTrainingArguments), prog="hf-lfi train")
    parser.add_argument(
        "--config", metavar="NAME_OR_PATH", help=CONFIG_HELP.format(names=", ".join(shipped_configs()))
    )
    parser.set_defaults(
        do_train=True,  # the recipe trains, then evaluates every split asked for
        do_eval=True,
        dataloader_pin_memory=torch.cuda.is_available(),  # pinned memory only helps copies to a GPU
    )
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
        parser.set_defaults(use_cpu=True)  # several CPU processes: accelerate then joins them with gloo
    return parser


def _pop_config(argv: list[str]) -> str | None:
    """Remove `--config VALUE` / `--config=VALUE` from `argv` and return VALUE."""
    for at, item in enumerate(argv):
        if item.startswith("--config="):
            del argv[at]
            return item.partition("=")[2]
        if item == "--config":
            if at + 1 == len(argv) or argv[at + 1].startswith("--"):
                raise ValueError("--config needs a value: a shipped config name or a YAML/JSON file of flag names.")
            value = argv[at + 1]
            del argv[at : at + 2]
            return value
    return None


def parse_arguments(
    argv: list[str] | None = None,
) -> tuple[ModelArguments, DataArguments, InteractionTrainingArguments]:
    """The recipe's arguments from `argv` (default `sys.argv[1:]`): a `--config` file's values as defaults,
    command-line flags over them, every value checked."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    config = _pop_config(argv)
    if config is not None:
        parser.set_defaults(**read_config_file(parser, config_path(config)))
    model_args, data_args, training_args, _ = parser.parse_args_into_dataclasses(args=argv)
    check_arguments(model_args, data_args, training_args)
    return model_args, data_args, training_args


def check_arguments(model_args: ModelArguments, data_args: DataArguments, training_args) -> None:
    """Refuse flags that do not go together (each group checks its own values when it is built)."""
    classification, segmentation = model_args.task == CLASSIFICATION, model_args.task == SEGMENTATION
    if data_args.few_shot is not None and classification:
        raise ValueError("--few_shot selects k objects per category: it is for object detection and segmentation.")
    if data_args.instance_mask_column is not None and not segmentation:
        raise ValueError("--instance_mask_column gives instance masks: it is for --task segmentation.")
    if data_args.teacher == "vlm" and not classification:
        raise ValueError(
            "An online VLM teacher is for classification; precompute detection maps (Eq. 12, `hf-lfi precompute`) "
            "and train on them with --interaction_dataset."
        )
    if segmentation and (data_args.eval_split or data_args.test_splits) and training_args.world_size > 1:
        raise ValueError(
            "Segmentation is evaluated on one process: each process pads its batch to its own size, so the "
            "predicted and target masks cannot be gathered across processes. Train on several processes without "
            "evaluation (--eval_split '' --eval_strategy no, no --test_splits), then evaluate the saved model with "
            "one process."
        )
    if model_args.lora_rank > 0 and model_args.model_name_or_path is None:
        raise ValueError("LoRA adapts a pretrained backbone: set --model_name_or_path.")


def read_config_file(parser: HfArgumentParser, path: str | os.PathLike) -> dict:
    """The flag defaults in a YAML/JSON file, each checked against its flag's type and choices like a command-line
    value (argparse would take a non-string default as it is)."""
    with open(path) as file:
        values = yaml.safe_load(file)
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ValueError(f"{path} must be a mapping of flag names to values, got a {type(values).__name__}.")
    actions = {action.dest: action for action in parser._actions if action.dest != "config"}
    unknown = sorted(set(values) - set(actions))
    if unknown:
        raise ValueError(f"Unknown keys in {path}: {unknown}.")
    checked = {}
    for key, value in values.items():
        action = actions[key]
        many = action.nargs in ("+", "*")
        # str flags such as report_to also take a list from the file, as TrainingArguments does
        if (
            value is None
            or (action.type is None and action.choices is None)
            or (action.type is str and isinstance(value, list))
        ):
            checked[key] = value
            continue
        if many != isinstance(value, list) or isinstance(value, dict):
            expected = "a list" if many else "a single value"
            raise ValueError(f"{path}: {key} must be {expected}, got {value!r}.")
        parsed = []
        for item in value if many else [value]:
            try:
                item = action.type(item if isinstance(item, str) else str(item)) if action.type else item
            except (TypeError, ValueError):
                name = getattr(action.type, "__name__", str(action.type))
                raise ValueError(f"{path}: {key} must be {name}, got {item!r}.") from None
            if action.choices is not None and item not in action.choices:
                raise ValueError(f"{path}: {key} must be one of {list(action.choices)}, got {item!r}.")
            parsed.append(item)
        checked[key] = parsed if many else parsed[0]
    return checked


def config_overrides(text: str | None, config_class=None) -> dict:
    """`key=value,...` as a dict of YAML values; keys must be fields of `config_class` (a typo is an error)."""
    overrides = {}
    for item in filter(None, (text or "").split(",")):
        key, equals, value = item.partition("=")
        if not equals or not key.strip():
            raise ValueError(f"--config_overrides item {item!r} is not key=value (in {text!r}).")
        overrides[key.strip()] = yaml.safe_load(value)
    if config_class is not None:
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(config_class)})
        if unknown:
            raise ValueError(
                f"Unknown --config_overrides keys {unknown}: not fields of {config_class.__name__} (a typo?)."
            )
    return overrides


__all__ = [
    "CONFIGS_DIR",
    "check_arguments",
    "DataArguments",
    "ModelArguments",
    "build_parser",
    "config_overrides",
    "config_path",
    "parse_arguments",
    "read_config_file",
    "shipped_configs",
]
