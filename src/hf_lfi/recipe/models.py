"""The model a run trains, for every student and task: an I-model converted from its source checkpoint, continued
from an I-model checkpoint or built from scratch, or the source model itself (the baseline), and its image
processor."""

import torch
import transformers
from transformers import AutoConfig, AutoImageProcessor
from transformers.utils import is_torchvision_available

from ..modeling.conversion import convert_to_interaction_model, freeze_original_parameters
from ..presets import ALL_PRESET_NAMES, preset_config
from ..students import TASKS, student_for_method
from .arguments import ModelArguments, config_overrides

_LABEL_KEYS = ("num_labels", "id2label", "label2id")


def build_model(model_args: ModelArguments, labels: list[str]):
    """The model `--method` / `--task` train on `labels`: from `--model_name_or_path` (a source checkpoint converted,
    or loaded as the baseline; an I-model checkpoint continued), else from scratch (`--config_name`, a preset or a
    config folder / Hub id, plus `--config_overrides`)."""
    student = student_for_method(model_args.method)
    model_class = student.model_class(model_args.task)
    baseline = model_args.method == student.baseline
    overrides = {
        **config_overrides(model_args.config_overrides, model_class.config_class),
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {name: i for i, name in enumerate(labels)},
    }
    if model_args.freeze_backbone is not None and not baseline:
        overrides["freeze_backbone"] = model_args.freeze_backbone
    source = model_args.model_name_or_path
    if baseline and model_args.freeze_backbone and source is None:
        raise ValueError(
            f"--freeze_backbone on --method {model_args.method} trains only the head of a pretrained backbone: set "
            "--model_name_or_path."
        )
    if source is None:
        config = _scratch_config(model_args, student, overrides)
        return model_class.baseline_model(config) if baseline else model_class(config)

    config = AutoConfig.from_pretrained(source)
    model_type = config.model_type
    if model_type in model_class._source_model_types:
        if baseline:
            loaded = TASKS[model_args.task].auto()
            _check_head(config, source, loaded, student, model_args.task)
            model = loaded.from_pretrained(source, ignore_mismatched_sizes=True, **overrides)
            if model_args.freeze_backbone:  # a linear probe: a frozen I-model's trainable budget minus its queries
                freeze_original_parameters(model, model_class._head_prefixes)
            return model
        return convert_to_interaction_model(model_class, source, overrides, f"--method {model_args.method}")
    if model_type == student.model_type and not baseline:
        _check_head(config, source, model_class, student, model_args.task)
        return continue_student(model_class, source, overrides, labels)
    name = model_class._source_name
    expected = f"a {name} checkpoint" if baseline else f"a {name} or I-{name} checkpoint"
    raise ValueError(
        f"--method {model_args.method} trains from {expected} (model_type "
        f"{' or '.join(repr(t) for t in model_class._source_model_types)}"
        f"{'' if baseline else f' or {student.model_type!r}'}); {source} has model_type {model_type!r}."
    )


def _scratch_config(model_args: ModelArguments, student, overrides: dict):
    name, config_class = model_args.config_name, student.config_class
    if name in ALL_PRESET_NAMES:
        config = preset_config(name, **overrides)
        if not isinstance(config, config_class):
            raise ValueError(
                f"The preset {name} is a {config.model_type} configuration; --method {model_args.method} trains "
                f"{student.model_type} models."
            )
        return config
    config = config_class.from_pretrained(name, **overrides) if name else config_class(**overrides)
    if getattr(config, "use_pretrained_backbone", False):
        raise ValueError(
            f"--method {model_args.method} from scratch with {name or 'the default configuration'} would download "
            "pretrained backbone weights: give --config_name a preset or config with its backbone_config and "
            "use_pretrained_backbone false, or --model_name_or_path a checkpoint."
        )
    return config


def _check_head(config, source: str, loaded: type, student, task: str) -> None:
    """Refuse a checkpoint of another task's model of the same family (e.g. a detector continued as a segmentation
    model): its head weights would be dropped or left random. A headless checkpoint is fine."""
    architectures = config.architectures or []
    other_heads = {
        cls.__name__
        for other, model_class in student.task_models.items()
        if other != task
        for cls in (model_class, student.baseline_class(other))
    }
    named = [name for name in architectures if name in other_heads]
    if named:
        raise ValueError(
            f"{source} is a {named[0]} checkpoint; loading it as a {loaded.__name__} would lose its weights. Give a "
            f"{loaded.__name__} checkpoint, or one of its source model to convert."
        )


def continue_student(model_class: type, source: str, overrides: dict, labels: list[str]):
    """An I-model checkpoint continued on `labels`: its class rows follow the class names (the same classes in
    another order are reordered; other classes are refused rather than kept under new names)."""
    model = model_class.from_pretrained(source, **{k: v for k, v in overrides.items() if k not in _LABEL_KEYS})
    trained = [model.config.id2label[i] for i in range(model.config.num_labels)]
    if sorted(trained) != sorted(labels):
        raise ValueError(
            f"{source} was trained on the classes {trained[:10]}, the dataset has {labels[:10]}: its head would predict "
            f"other classes. Continue on the same classes, or convert a {model_class._source_name} (--model_name_or_path a "
            f"{model_class._source_name} checkpoint)."
        )
    order = [trained.index(name) for name in labels]
    with torch.no_grad():
        for name, module in model.named_modules():
            # the class rows of every classifier (DETR's has one more: "no object", which stays last)
            if name.endswith("classifier") and isinstance(module, torch.nn.Linear):
                module.weight[: len(order)] = module.weight[order].clone()
                module.bias[: len(order)] = module.bias[order].clone()
    model.config.id2label, model.config.label2id = dict(enumerate(labels)), {n: i for i, n in enumerate(labels)}
    return model


def build_image_processor(model_args: ModelArguments, config):
    """The checkpoint's processor, else the student's (`Student.image_processor`): torchvision's fast one where
    torchvision is installed, else the PIL one (picked directly, so no fallback warning), sized for the config's
    images (classification) or `--detection_shortest_edge` / `--detection_longest_edge` (detection)."""
    name = model_args.image_processor_name or model_args.model_name_or_path
    if name is not None:
        try:
            return AutoImageProcessor.from_pretrained(name)
        except OSError:
            if model_args.image_processor_name:
                raise
    processor_class = getattr(
        transformers,
        student_for_method(model_args.method).image_processor + ("" if is_torchvision_available() else "Pil"),
    )
    if model_args.task == "image-classification":
        size = getattr(config, "vision_config", config).image_size  # SigLIP keeps it in its vision tower config
        return processor_class(size={"height": size, "width": size})
    return processor_class(
        size={"shortest_edge": model_args.detection_shortest_edge, "longest_edge": model_args.detection_longest_edge}
    )


__all__ = ["build_image_processor", "build_model", "continue_student"]
