#!/usr/bin/env python
"""Train an I-model (or its baseline) with teacher interaction maps: I-ViT / I-DINOv2 / I-SigLIP on image
classification, I-DETR / I-Conditional-DETR on object detection, I-DETR on instance segmentation.

    accelerate launch training/run.py --config training/configs/tiny_smoke.yaml
    accelerate launch --multi_gpu --num_processes 2 training/run.py --config training/configs/tiny_smoke.yaml  # also CPU
    python training/run.py --config training/configs/ivit_s_emoji_shift.yaml --method vit --output_dir runs/vit
    python training/run.py --config training/configs/idetr_seg_emoji_shift.yaml --method detr --output_dir runs/detr_seg

Every field of `ModelArguments`, `DataArguments` and `InteractionTrainingArguments` is a flag; `--config` reads a
YAML/JSON file of the same names and the flags given on the command line override it. `--resume_from_checkpoint
latest` continues from the newest checkpoint in `--output_dir`.
"""

import dataclasses
import json
import logging
import os
import sys
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import torch
import transformers
import yaml
from safetensors import SafetensorError
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForImageClassification,
    ConditionalDetrForObjectDetection,
    DetrForObjectDetection,
    DetrForSegmentation,
    HfArgumentParser,
    default_data_collator,
)
from transformers.utils import is_torchvision_available

import hf_lfi
from hf_lfi import metrics
from hf_lfi.cli import RUN_CONFIG_NAME
from hf_lfi.interactions import InteractionExtractor, MaskInteractionMapFn
from hf_lfi.modeling.conversion import convert_to_interaction_model, freeze_original_parameters
from hf_lfi.modeling.name_or_path import NameOrPathError, resolve_name_or_path
from hf_lfi.presets import STUDENT_PRESET_NAMES
from hf_lfi.training import (
    ROW_INDEX_COLUMN,
    AugmentationEpochCallback,
    CheckpointTrainer,
    ImageClassificationTransform,
    InteractionTrainer,
    InteractionTrainingArguments,
    check_interaction_column,
    check_labels,
    collate_with_teacher_images,
    label_ids,
    last_complete_checkpoint,
    load_image_dataset,
    subsample,
)
from hf_lfi.training.detection import (
    PREDICTION_IGNORE_KEYS,
    DetectionTransform,
    SegmentationMetrics,
    collate_detection,
    few_shot_subset,
    make_detection_metrics,
    single_object_detection,
)
from hf_lfi.training.lora import add_lora

logger = logging.getLogger(__name__)


@dataclass
class ModelArguments:
    method: Literal["ivit", "vit", "idinov2", "dinov2", "isiglip", "siglip", "idetr", "detr", "icdetr", "cdetr"] = (
        field(
            default="ivit",
            metadata={
                "help": "'ivit', 'idinov2', 'isiglip' (interaction queries + alignment loss) or their baselines 'vit', "
                "'dinov2', 'siglip' with the same settings (image classification); 'idetr' or the 'detr' baseline (object "
                "detection or, with --task segmentation, instance segmentation; COCO-format data); 'icdetr' or the "
                "'cdetr' baseline (Conditional-DETR object detection)."
            },
        )
    )
    task: Literal["image-classification", "object-detection", "segmentation"] | None = field(
        default=None,
        metadata={
            "help": "Picks the method's default for the task: 'object-detection' -> idetr, 'segmentation' -> idetr "
            "with DETR's mask head (DetrForSegmentation), unless --method names another method of the task."
        },
    )
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "A ViT checkpoint (Hub id or folder) to convert (backbone frozen, paper protocol), or an I-ViT "
            "checkpoint to continue. Unset: train from scratch (paper Table 2)."
        },
    )
    config_name: str | None = field(
        default=None,
        metadata={
            "help": f"From scratch: a preset ({', '.join(hf_lfi.PRESET_NAMES + STUDENT_PRESET_NAMES)}) or a config folder/Hub id."
        },
    )
    config_overrides: str | None = field(
        default=None,
        metadata={"help": "Config fields to change, e.g. 'hidden_size=64,num_hidden_layers=2,image_size=64'."},
    )
    freeze_backbone: bool | None = field(
        default=None,
        metadata={
            "help": "Train only interaction queries, gates and head (a baseline: only its head). Default: True when "
            "converting, False otherwise."
        },
    )
    image_processor_name: str | None = field(
        default=None,
        metadata={"help": "Image processor to use (default: the checkpoint's, else one for the config's image_size)."},
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


@dataclass
class DataArguments:
    dataset_name: str | None = field(
        default=None, metadata={"help": "Hub id or local folder (save_to_disk, parquet files per split, imagefolder)."}
    )
    dataset_config_name: str | None = field(
        default=None, metadata={"help": "The configuration of a Hub dataset that has several (default: its default)."}
    )
    interaction_dataset: str | None = field(
        default=None,
        metadata={"help": "Hub id or folder of an interaction dataset (images + teacher maps) to train on."},
    )
    teacher: Literal["dataset", "mask", "llava"] = field(
        default="dataset",
        metadata={
            "help": "Teacher maps from the dataset's map column, a mask teacher built from `mask_column`, or a LLaVA "
            "teacher run online on every training batch (`teacher_model_name_or_path`)."
        },
    )
    teacher_model_name_or_path: str | None = field(default=None, metadata={"help": "The online LLaVA teacher."})
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


# interaction method -> (its baseline method, the I-model it trains)
CLASSIFICATION_STUDENTS = {
    "ivit": ("vit", hf_lfi.IViTForImageClassification),
    "idinov2": ("dinov2", hf_lfi.IDinov2ForImageClassification),
    "isiglip": ("siglip", hf_lfi.ISiglipForImageClassification),
}
BASELINES = {baseline: student for student, (baseline, _) in CLASSIFICATION_STUDENTS.items()}
TASK_METHODS = {
    "image-classification": tuple(
        m for student, (baseline, _) in CLASSIFICATION_STUDENTS.items() for m in (student, baseline)
    ),
    "object-detection": ("idetr", "detr", "icdetr", "cdetr"),
    "segmentation": ("idetr", "detr"),
}
DETECTION_METHODS = TASK_METHODS["object-detection"]
DETECTION_BASELINES = ("detr", "cdetr")


def resolve_task(model_args) -> None:
    """`--task` selects the interaction model of that task when `--method` is left at its default."""
    if model_args.task is None:
        return
    methods = TASK_METHODS[model_args.task]
    if model_args.method not in methods:
        if model_args.method != "ivit":  # the default method: switch to the task's own
            raise ValueError(f"--method {model_args.method} does not do {model_args.task}; use one of {methods}.")
        model_args.method = methods[0]


def parse_arguments(argv: list[str] | None = None):
    """Dataclasses from `--config FILE` (YAML/JSON) with command-line flags taking precedence."""
    parser = HfArgumentParser((ModelArguments, DataArguments, InteractionTrainingArguments))
    argv = list(sys.argv[1:] if argv is None else argv)
    parser.set_defaults(do_train=True, do_eval=True)  # run.py trains, then evaluates every split asked for
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
        parser.set_defaults(use_cpu=True)  # several CPU processes: accelerate then joins them with gloo
    if "--config" in argv:
        at = argv.index("--config")
        if at + 1 == len(argv) or argv[at + 1].startswith("--"):
            raise ValueError("--config needs a value: the path of a YAML/JSON file of flag names.")
        path = argv[at + 1]
        del argv[at : at + 2]
        parser.set_defaults(**read_config_file(parser, path))
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    resolve_task(model_args)
    return model_args, data_args, training_args


def read_config_file(parser: HfArgumentParser, path: str) -> dict:
    """The flag defaults in a YAML/JSON file, each checked against its flag's type and choices like a command-line
    value (argparse would take a non-string default as it is)."""
    with open(path) as file:
        values = yaml.safe_load(file)
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ValueError(f"{path} must be a mapping of flag names to values, got a {type(values).__name__}.")
    actions = {action.dest: action for action in parser._actions}
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


def _config_overrides(text: str | None, config_class=None) -> dict:
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


def continue_student(model_class, source: str, overrides: dict, labels: list[str]):
    """An I-model checkpoint (`model_class`) continued on `labels`: its classifier rows follow the class names (the same
    classes in another order are reordered; other classes are refused rather than kept under new names)."""
    model = model_class.from_pretrained(
        source, **{k: v for k, v in overrides.items() if k not in ("num_labels", "id2label", "label2id")}
    )
    trained = [model.config.id2label[i] for i in range(model.config.num_labels)]
    if sorted(trained) != sorted(labels):
        raise ValueError(
            f"{source} was trained on the classes {trained[:10]}, the dataset has {labels[:10]}: its head would predict "
            f"other classes. Continue on the same classes, or convert a {model_class._source_name} (--model_name_or_path a "
            f"{model_class._source_name} checkpoint)."
        )
    order = [trained.index(name) for name in labels]
    with torch.no_grad():
        model.classifier.weight.copy_(model.classifier.weight[order])
        model.classifier.bias.copy_(model.classifier.bias[order])
    model.config.id2label, model.config.label2id = dict(enumerate(labels)), {n: i for i, n in enumerate(labels)}
    return model


def detection_classes(model_args: ModelArguments) -> tuple[type, type]:
    """(the I-model, its transformers baseline) that `--method` / `--task` train."""
    if model_args.method in ("icdetr", "cdetr"):
        return hf_lfi.IConditionalDetrForObjectDetection, ConditionalDetrForObjectDetection
    if model_args.task == "segmentation":
        return hf_lfi.IDetrForSegmentation, DetrForSegmentation
    return hf_lfi.IDetrForObjectDetection, DetrForObjectDetection


def build_detection_model(model_args: ModelArguments, overrides: dict):
    """The I-model converted from its transformers source (DETR, DetrForSegmentation, Conditional-DETR) or continued
    from an I-model checkpoint, the baseline, or either from scratch from `--config_name` (a config file/folder; the
    default configs would download a timm backbone)."""
    model_class, baseline_class = detection_classes(model_args)
    baseline = model_args.method in DETECTION_BASELINES
    source_type, own_type = baseline_class.config_class.model_type, model_class.config_class.model_type
    source = model_args.model_name_or_path
    if source is not None:
        config = AutoConfig.from_pretrained(source)
        if baseline and config.model_type != source_type:
            raise ValueError(
                f"--method {model_args.method} trains a {baseline_class.__name__}; {source} is a "
                f"{config.model_type!r} checkpoint."
            )
        if not baseline and config.model_type == source_type:
            return convert_to_interaction_model(model_class, source, overrides, f"--method {model_args.method}")
        if not baseline and config.model_type != own_type:
            raise ValueError(
                f"--model_name_or_path must be a {source_type} or {own_type} checkpoint for --method "
                f"{model_args.method}, got model_type {config.model_type!r}."
            )
        loaded = baseline_class if baseline else model_class
        if config.architectures and loaded.__name__ not in config.architectures:  # another head: weights would be lost
            raise ValueError(
                f"{source} is a {config.architectures[0]} checkpoint; continuing it as a {loaded.__name__} would lose its "
                f"weights. Give a {loaded.__name__} checkpoint"
                + ("." if baseline else f", or a {source_type} one to convert.")
            )
        if baseline:
            overrides.pop("freeze_backbone", None)
        return loaded.from_pretrained(source, ignore_mismatched_sizes=True, **overrides)
    if model_args.config_name is None:
        raise ValueError(
            f"--method {model_args.method} from scratch needs --config_name (a {source_type}/{own_type} config with its "
            "backbone_config)."
        )
    config = model_class.config_class.from_pretrained(model_args.config_name, **overrides)
    return model_class.baseline_model(config) if baseline else model_class(config)


def build_model(model_args: ModelArguments, labels: list[str]):
    """The model to train: converted from a ViT/DETR checkpoint, continued from an I-model one, or from scratch."""
    label_kwargs = {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {n: i for i, n in enumerate(labels)},
    }
    if model_args.method in DETECTION_METHODS:
        config_class = detection_classes(model_args)[0].config_class
    else:
        config_class = CLASSIFICATION_STUDENTS[BASELINES.get(model_args.method, model_args.method)][1].config_class
    overrides = {**_config_overrides(model_args.config_overrides, config_class), **label_kwargs}
    if model_args.freeze_backbone is not None:
        overrides["freeze_backbone"] = model_args.freeze_backbone
    if model_args.method in DETECTION_METHODS:
        return build_detection_model(model_args, overrides)
    student = BASELINES.get(model_args.method, model_args.method)
    baseline, model_class = CLASSIFICATION_STUDENTS[student]
    source_types, own_type = model_class._source_model_types, model_class.config_class.model_type
    source = model_args.model_name_or_path
    if model_args.method == baseline and model_args.freeze_backbone and source is None:
        raise ValueError(
            f"--freeze_backbone on --method {baseline} trains only the head of a pretrained backbone: set --model_name_or_path."
        )
    if source is not None:
        model_type = AutoConfig.from_pretrained(source).model_type
        if model_args.method == baseline:
            if model_type not in source_types:
                raise ValueError(
                    f"--method {baseline} trains a {model_class._source_name}; {source} is a {model_type!r} checkpoint."
                )
            overrides.pop("freeze_backbone", None)
            model = AutoModelForImageClassification.from_pretrained(source, ignore_mismatched_sizes=True, **overrides)
            if (
                model_args.freeze_backbone
            ):  # a linear probe: the trainable budget of a frozen I-model minus its queries
                freeze_original_parameters(model, model_class._head_prefixes)
            return model
        if model_type in source_types:
            return convert_to_interaction_model(model_class, source, overrides, f"--method {student}")
        if model_type == own_type:
            return continue_student(model_class, source, overrides, labels)
        name = model_class._source_name
        raise ValueError(
            f"--model_name_or_path must be a {name} or I-{name} checkpoint, got model_type {model_type!r}."
        )
    name = model_args.config_name
    if name in hf_lfi.PRESET_NAMES + STUDENT_PRESET_NAMES:
        config = hf_lfi.preset_config(name, **overrides)
    else:
        config_class = model_class.config_class
        config = config_class.from_pretrained(name, **overrides) if name else config_class(**overrides)
    if model_args.method == baseline:
        return model_class.baseline_model(config)
    return model_class(config)


def build_online_teacher(data_args: DataArguments, device):
    """An `InteractionExtractor` over a LLaVA checkpoint, run on every training batch (no precomputed maps)."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    if data_args.teacher_model_name_or_path is None:
        raise ValueError("--teacher llava needs --teacher_model_name_or_path (a LLaVA checkpoint).")
    teacher = resolve_name_or_path(data_args.teacher_model_name_or_path)
    model = LlavaForConditionalGeneration.from_pretrained(teacher, dtype="auto")
    model.to(device).eval()
    processor = AutoProcessor.from_pretrained(teacher)
    return InteractionExtractor(
        model, processor, data_args.teacher_prompt, max_new_tokens=data_args.teacher_max_new_tokens
    )


def prepare_teacher(train, data_args: DataArguments, training_args: InteractionTrainingArguments):
    """(training rows, online teacher): rows with checked teacher-map columns (precomputed or from the mask teacher),
    or the rows as they are plus the LLaVA extractor that maps every batch."""
    if data_args.teacher == "llava":
        return train, build_online_teacher(data_args, training_args.device)
    map_column, valid_column = training_args.interaction_map_column, training_args.interaction_valid_column
    if data_args.teacher == "mask":
        teacher = MaskInteractionMapFn(
            data_args.mask_column,
            (data_args.mask_teacher_grid,) * 2,
            data_args.mask_teacher_blur,
            data_args.mask_teacher_leak,
            data_args.mask_teacher_wrong,
        )
        with training_args.main_process_first(desc="mask teacher maps"):
            train = train.map(teacher, batched=True, desc="mask teacher maps")
        train = train.rename_columns({"interaction_map": map_column, "interaction_valid": valid_column})
    grid = check_interaction_column(train, map_column, valid_column)
    logger.info("Teacher maps: %d rows on a %dx%d grid", len(train), *grid)
    return train, None


def build_image_processor(model_args: ModelArguments, config):
    """The checkpoint's processor, else the task's: torchvision's fast one where torchvision is installed, else the
    PIL one (picked directly, so neither a fallback warning nor the other task's processor is loaded)."""
    name = model_args.image_processor_name or model_args.model_name_or_path
    if name is not None:
        try:
            return AutoImageProcessor.from_pretrained(name)
        except OSError:
            if model_args.image_processor_name:
                raise
    backend = "" if is_torchvision_available() else "Pil"
    if model_args.method in DETECTION_METHODS:
        size = {"shortest_edge": model_args.detection_shortest_edge, "longest_edge": model_args.detection_longest_edge}
        family = "ConditionalDetr" if model_args.method in ("icdetr", "cdetr") else "Detr"
        return getattr(transformers, f"{family}ImageProcessor{backend}")(size=size)
    size = getattr(config, "vision_config", config).image_size  # SigLIP keeps it in its vision tower config
    return getattr(transformers, f"ViTImageProcessor{backend}")(size={"height": size, "width": size})


def load_data(data_args: DataArguments, training_args: InteractionTrainingArguments):
    raw = load_image_dataset(data_args.dataset_name, data_args.dataset_config_name) if data_args.dataset_name else {}
    train = (
        load_image_dataset(data_args.interaction_dataset)[data_args.train_split]
        if data_args.interaction_dataset
        else None
    )
    if train is None:
        if data_args.train_split not in raw:
            raise ValueError(f"No split {data_args.train_split!r} in {data_args.dataset_name} (splits: {list(raw)}).")
        train = raw[data_args.train_split]
    if len(train) == 0:
        raise ValueError(
            f"The training split {data_args.train_split!r} of {data_args.interaction_dataset or data_args.dataset_name} has no rows."
        )
    if data_args.max_train_samples is not None:  # a cap on the split; data_ratio then takes its share of it
        train = train.select(range(min(data_args.max_train_samples, len(train))))
    train = subsample(train, data_args.data_ratio, training_args.data_seed or training_args.seed)
    evaluated = {}
    for split in filter(None, [data_args.eval_split, *data_args.test_splits]):
        if split not in raw:
            raise ValueError(f"No split {split!r} to evaluate in {data_args.dataset_name} (splits: {list(raw)}).")
        dataset = raw[split]
        if data_args.max_eval_samples is not None:
            dataset = dataset.select(range(min(data_args.max_eval_samples, len(dataset))))
        evaluated[split] = dataset
    return train, evaluated


def label_names(dataset, label_column: str, objects_column: str | None = None) -> list[str]:
    """Class names from a ClassLabel feature (for detection: `objects_column`'s `category`), else "0".."max"."""
    if objects_column is not None:
        if objects_column not in dataset.column_names:
            raise ValueError(
                f"The dataset has no objects column {objects_column!r} (columns: {dataset.column_names})."
            )
        feature = dataset.features[objects_column]["category"]
        feature = getattr(feature, "feature", feature)  # a Sequence/List of ClassLabel
        if hasattr(feature, "names"):
            return list(feature.names)
        ids = [c for objects in dataset[objects_column] for c in objects["category"]]
        return [str(i) for i in range(int(max(ids, default=0)) + 1)]
    feature = dataset.features.get(label_column)
    if feature is None:
        raise ValueError(f"The dataset has no label column {label_column!r} (columns: {dataset.column_names}).")
    if hasattr(feature, "names"):
        return list(feature.names)
    return [str(i) for i in range(int(label_ids(dataset, label_column).max()) + 1)]


def make_compute_metrics(top_k: int, num_labels: int):
    accuracy = metrics.load("accuracy_topk")
    ks = min(top_k, num_labels)

    def compute_metrics(prediction):
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        return accuracy.compute(predictions=np.asarray(logits), references=prediction.label_ids, top_k=ks)

    return compute_metrics


def main(argv: list[str] | None = None, callbacks=()) -> dict:
    model_args, data_args, training_args = parse_arguments(argv)
    if model_args.model_name_or_path is not None:  # a local path, or a Hub id the Hub has (else one clear line)
        model_args.model_name_or_path = resolve_name_or_path(model_args.model_name_or_path)
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=training_args.get_process_log_level()
    )
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())
    transformers.set_seed(training_args.seed)
    if training_args.should_save:  # what `hf-lfi publish` puts on the card
        os.makedirs(training_args.output_dir, exist_ok=True)
        with open(os.path.join(training_args.output_dir, RUN_CONFIG_NAME), "w") as file:
            json.dump({"model": asdict(model_args), "data": asdict(data_args)}, file, indent=2)

    detection = model_args.method in DETECTION_METHODS
    segmentation = model_args.task == "segmentation"
    if data_args.instance_mask_column is not None and not segmentation:
        raise ValueError("--instance_mask_column gives instance masks: it is for --task segmentation.")
    if segmentation and (data_args.eval_split or data_args.test_splits) and training_args.world_size > 1:
        raise ValueError(
            "Segmentation is evaluated on one process: each process pads its batch to its own size, so the "
            "predicted and target masks cannot be gathered across processes. Train on several processes without "
            "evaluation (--eval_split '' --eval_strategy no, no --test_splits), then evaluate the saved model with "
            "one process."
        )
    train, evaluated = load_data(data_args, training_args)
    if detection and data_args.bbox_column is not None:  # a single-object dataset: objects from its box and label
        columns = (data_args.bbox_column, data_args.label_column, data_args.objects_column)
        train = single_object_detection(train, *columns)
        evaluated = {split: single_object_detection(rows, *columns) for split, rows in evaluated.items()}
    labels = label_names(train, data_args.label_column, data_args.objects_column if detection else None)
    if data_args.few_shot is not None:
        if not detection:
            raise ValueError(
                f"--few_shot selects k objects per category: it is for detection (--method {'/'.join(DETECTION_METHODS)})."
            )
        train = few_shot_subset(
            train, data_args.few_shot, training_args.data_seed or training_args.seed, data_args.objects_column
        )
    try:
        model = build_model(model_args, labels)
    except SafetensorError as error:  # its message names no file
        raise ValueError(
            f"Unreadable weights under {model_args.model_name_or_path or model_args.config_name}: {error}"
        ) from error
    if not detection:  # detection targets are checked row by row by DetectionTransform (boxes need the image size)
        for dataset in (train, *evaluated.values()):
            check_labels(dataset, data_args.label_column, len(labels))

    interactive = model_args.method in ("idetr", "icdetr", *CLASSIFICATION_STUDENTS)
    interaction = interactive and training_args.alignment_weight > 0
    online_teacher = None
    if interaction:
        train, online_teacher = prepare_teacher(train, data_args, training_args)
    map_column, valid_column = training_args.interaction_map_column, training_args.interaction_valid_column
    maps_in_batch = interaction and online_teacher is None

    image_processor = build_image_processor(model_args, model.config)
    if detection:
        if online_teacher is not None:
            raise ValueError(
                "An online LLaVA teacher is for classification; precompute detection maps (Eq. 12) instead."
            )
        masks = {"instance_masks": segmentation, "instance_mask_column": data_args.instance_mask_column}
        train.set_transform(
            DetectionTransform(
                image_processor,
                len(labels),
                data_args.image_column,
                data_args.objects_column,
                map_column if maps_in_batch else None,
                valid_column if maps_in_batch else None,
                **masks,
            )
        )
        for dataset in evaluated.values():
            dataset.set_transform(
                DetectionTransform(
                    image_processor, len(labels), data_args.image_column, data_args.objects_column, **masks
                )
            )
        training_args.eval_do_concat_batches = False  # images differ in size and box count
        ignore_keys = PREDICTION_IGNORE_KEYS
        collator = collate_detection
        if segmentation:  # per-batch metrics: the eval set's pred_masks would not fit in memory
            training_args.batch_eval_metrics = True
            compute_metrics = SegmentationMetrics(image_processor, metrics.load("coco_map", config_name="segm"))
        else:
            compute_metrics = make_detection_metrics(image_processor, metrics.load("coco_map"))
    else:
        train_transform = ImageClassificationTransform(
            image_processor,
            data_args.image_column,
            data_args.label_column,
            map_column if maps_in_batch else None,
            valid_column if maps_in_batch else None,
            augment=data_args.train_augmentation,
            scale=(data_args.crop_scale_min, 1.0),
            seed=training_args.seed,
            keep_teacher_images=online_teacher is not None,
        )
        if data_args.train_augmentation:
            train = train.add_column(ROW_INDEX_COLUMN, list(range(len(train))))
            callbacks = [AugmentationEpochCallback(train_transform), *callbacks]
        train.set_transform(train_transform)
        eval_transform = ImageClassificationTransform(image_processor, data_args.image_column, data_args.label_column)
        for dataset in evaluated.values():
            dataset.set_transform(eval_transform)
        collator = collate_with_teacher_images if online_teacher is not None else default_data_collator
        compute_metrics = make_compute_metrics(data_args.top_k, len(labels))
        ignore_keys = None

    if model_args.lora_rank > 0:
        if model_args.model_name_or_path is None:
            raise ValueError("LoRA adapts a pretrained backbone: set --model_name_or_path.")
        model = add_lora(model, model_args.lora_rank, model_args.lora_alpha, model_args.lora_dropout)

    training_args.remove_unused_columns = False  # the transforms emit exactly the model's inputs and the maps
    if training_args.ddp_find_unused_parameters is None:  # every trainable parameter gets a gradient: no search
        training_args.ddp_find_unused_parameters = False
    trainer_kwargs = {"teacher": online_teacher} if interactive else {}
    trainer = (InteractionTrainer if interactive else CheckpointTrainer)(
        model=model,
        args=training_args,
        train_dataset=train,
        eval_dataset=evaluated.get(data_args.eval_split),
        data_collator=collator,
        processing_class=image_processor,
        compute_metrics=compute_metrics,
        callbacks=list(callbacks),
        **trainer_kwargs,
    )

    results = {}
    if training_args.do_train:
        checkpoint = training_args.resume_from_checkpoint
        if checkpoint in ("latest", "true", "True"):
            checkpoint = last_complete_checkpoint(training_args.output_dir)
            if checkpoint is None:
                raise ValueError(
                    f"--resume_from_checkpoint latest: no complete checkpoint in {training_args.output_dir}."
                )
            logger.info("Resuming from %s", checkpoint)
        train_result = trainer.train(resume_from_checkpoint=checkpoint, ignore_keys_for_eval=ignore_keys)
        trainer.save_model()
        trainer.log_metrics("train", train_result.metrics)
        trainer.save_metrics("train", train_result.metrics)
        trainer.save_state()
        results.update(train_result.metrics)
    for split, dataset in evaluated.items() if training_args.do_eval else ():
        split_metrics = trainer.evaluate(dataset, ignore_keys=ignore_keys, metric_key_prefix=split)
        trainer.log_metrics(split, split_metrics)
        trainer.save_metrics(split, split_metrics)
        results.update(split_metrics)
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset=[name for name in (data_args.dataset_name, data_args.interaction_dataset) if name])
    return results


if __name__ == "__main__":
    try:
        main()
    except NameOrPathError as error:  # a missing path, an unknown id, an unreachable or offline Hub
        sys.exit(f"training/run.py: {error}")
