"""`hf-lfi train`: train a student (or its baseline) with teacher interaction maps, then evaluate every split asked
for. I-ViT / I-DINOv2 / I-SigLIP on image classification, I-DETR / I-Conditional-DETR on object detection, I-DETR on
instance segmentation.

    hf-lfi train --config tiny_smoke                                   # a shipped config, by name
    hf-lfi train --config my_run.yaml --learning_rate 1e-4             # a config file, flags override it
    accelerate launch -m hf_lfi.recipe --config tiny_smoke             # several processes / GPUs
    accelerate launch training/run.py --config tiny_smoke              # the same, from a clone of the repository

Every field of `ModelArguments`, `DataArguments` and `InteractionTrainingArguments` is a flag (`--help` lists them).
`--resume_from_checkpoint latest` continues from the newest complete checkpoint in `--output_dir`.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import transformers
from safetensors import SafetensorError
from transformers import default_data_collator

from ..modeling.name_or_path import resolve_name_or_path
from ..students import CLASSIFICATION, SEGMENTATION, student_for_method
from ..training import (
    ROW_INDEX_COLUMN,
    AugmentationEpochCallback,
    CheckpointTrainer,
    ImageClassificationTransform,
    InteractionTrainer,
    check_labels,
    collate_with_teacher_images,
)
from ..training.detection import PREDICTION_IGNORE_KEYS, DetectionTransform, collate_detection
from .arguments import DataArguments, parse_arguments
from .data import detection_rows, label_names, load_data
from .evaluation import classification_metrics, detection_metrics
from .models import build_image_processor, build_model
from .records import check_output_dir, check_resume, run_record, write_run_config
from .teachers import prepare_teacher

logger = logging.getLogger(__name__)


@dataclass
class TaskSetup:
    """What the trainer needs for a task: transformed rows, their collator and metrics."""

    train: object
    evaluated: dict
    collator: Callable
    compute_metrics: Callable
    callbacks: list = field(default_factory=list)
    ignore_keys: list[str] | None = None


def setup_classification(train, evaluated, image_processor, labels, data_args: DataArguments, training_args, teacher):
    """Classification rows: images (randomly cropped and flipped with their teacher maps when augmenting), labels,
    the teacher maps of the batch (or the images an online teacher maps); top-k accuracy."""
    maps = teacher == "maps"
    transform = ImageClassificationTransform(
        image_processor,
        data_args.image_column,
        data_args.label_column,
        training_args.interaction_map_column if maps else None,
        training_args.interaction_valid_column if maps else None,
        augment=data_args.train_augmentation,
        scale=(data_args.crop_scale_min, 1.0),
        seed=training_args.seed,
        keep_teacher_images=teacher == "online",
    )
    callbacks = []
    if data_args.train_augmentation:  # crops seeded per (seed, epoch, row): the same on resume and on N processes
        train = train.add_column(ROW_INDEX_COLUMN, list(range(len(train))))
        callbacks.append(AugmentationEpochCallback(transform))
    train.set_transform(transform)
    eval_transform = ImageClassificationTransform(image_processor, data_args.image_column, data_args.label_column)
    for dataset in evaluated.values():
        dataset.set_transform(eval_transform)
    return TaskSetup(
        train,
        evaluated,
        collate_with_teacher_images if teacher == "online" else default_data_collator,
        classification_metrics(data_args.top_k, len(labels)),
        callbacks,
    )


def setup_detection(train, evaluated, image_processor, labels, data_args: DataArguments, training_args, teacher, task):
    """Detection / segmentation rows: DETR-style padded images, normalised boxes (and instance masks), the teacher
    maps of the batch; COCO box (and mask) mAP."""
    segmentation = task == SEGMENTATION
    masks = {"instance_masks": segmentation, "instance_mask_column": data_args.instance_mask_column}
    maps = teacher == "maps"
    columns = (data_args.image_column, data_args.objects_column)
    train.set_transform(
        DetectionTransform(
            image_processor,
            len(labels),
            *columns,
            training_args.interaction_map_column if maps else None,
            training_args.interaction_valid_column if maps else None,
            **masks,
        )
    )
    for dataset in evaluated.values():
        dataset.set_transform(DetectionTransform(image_processor, len(labels), *columns, **masks))
    training_args.eval_do_concat_batches = False  # images differ in size and box count
    if segmentation:  # per-batch metrics: the eval set's pred_masks would not fit in memory
        training_args.batch_eval_metrics = True
    return TaskSetup(
        train,
        evaluated,
        collate_detection,
        detection_metrics(image_processor, segmentation),
        [],
        PREDICTION_IGNORE_KEYS,
    )


def configure_logging(training_args) -> None:
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=training_args.get_process_log_level()
    )
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())


def main(argv: list[str] | None = None, callbacks=()) -> dict:
    """Run the recipe on `argv` (default: the command line); returns the final metrics (`all_results.json`)."""
    model_args, data_args, training_args = parse_arguments(argv)
    if model_args.model_name_or_path is not None:  # a local path, or a Hub id the Hub has (else one clear line)
        model_args.model_name_or_path = resolve_name_or_path(model_args.model_name_or_path)
    configure_logging(training_args)
    transformers.set_seed(training_args.seed)
    checkpoint = check_output_dir(training_args)
    if training_args.world_size > 1:  # every process has checked the folder before the main one writes the new record
        torch.distributed.barrier()

    classification = model_args.task == CLASSIFICATION
    train, evaluated = load_data(data_args, training_args)
    if not classification:
        train, evaluated = detection_rows(train, evaluated, data_args, training_args.data_seed or training_args.seed)
    labels = label_names(train, data_args.label_column, None if classification else data_args.objects_column)
    try:
        model = build_model(model_args, labels)
    except SafetensorError as error:  # its message names no file
        raise ValueError(
            f"Unreadable weights under {model_args.model_name_or_path or model_args.config_name}: {error}"
        ) from error
    if classification:  # detection targets are checked row by row by DetectionTransform (boxes need the image size)
        for dataset in (train, *evaluated.values()):
            check_labels(dataset, data_args.label_column, len(labels))

    interactive = model_args.method == student_for_method(model_args.method).method
    online_teacher, teacher = None, None
    if interactive and training_args.alignment_weight > 0:
        train, online_teacher = prepare_teacher(train, data_args, training_args)
        teacher = "maps" if online_teacher is None else "online"
    image_processor = build_image_processor(model_args, model.config)
    if classification:
        setup = setup_classification(train, evaluated, image_processor, labels, data_args, training_args, teacher)
    else:
        setup = setup_detection(
            train, evaluated, image_processor, labels, data_args, training_args, teacher, model_args.task
        )

    record = run_record(model_args, data_args, training_args)
    changed = check_resume(checkpoint, model, record, training_args.output_dir) if checkpoint else {}
    if model_args.lora_rank > 0:
        from ..training.lora import add_lora

        model = add_lora(model, model_args.lora_rank, model_args.lora_alpha, model_args.lora_dropout)

    training_args.remove_unused_columns = False  # the transforms emit exactly the model's inputs and the maps
    if training_args.ddp_find_unused_parameters is None:  # every trainable parameter gets a gradient: no search
        training_args.ddp_find_unused_parameters = False
    trainer = (InteractionTrainer if interactive else CheckpointTrainer)(
        model=model,
        args=training_args,
        train_dataset=setup.train,
        eval_dataset=setup.evaluated.get(data_args.eval_split),
        data_collator=setup.collator,
        processing_class=image_processor,
        compute_metrics=setup.compute_metrics,
        callbacks=[*setup.callbacks, *callbacks],
        **({"teacher": online_teacher} if interactive else {}),
    )
    if training_args.do_train and training_args.should_save:  # what `hf-lfi publish` puts on the card
        write_run_config(training_args.output_dir, record, checkpoint, changed)
    return train_and_evaluate(trainer, setup, checkpoint, data_args, training_args)


def train_and_evaluate(trainer, setup: TaskSetup, checkpoint: str | None, data_args, training_args) -> dict:
    results = {}
    if training_args.do_train:
        if checkpoint is not None:
            logger.info("Resuming from %s", checkpoint)
        train_result = trainer.train(resume_from_checkpoint=checkpoint, ignore_keys_for_eval=setup.ignore_keys)
        trainer.save_model()
        trainer.log_metrics("train", train_result.metrics)
        trainer.save_metrics("train", train_result.metrics)
        trainer.save_state()
        results.update(train_result.metrics)
    for split, dataset in setup.evaluated.items() if training_args.do_eval else ():
        split_metrics = trainer.evaluate(dataset, ignore_keys=setup.ignore_keys, metric_key_prefix=split)
        trainer.log_metrics(split, split_metrics)
        trainer.save_metrics(split, split_metrics)
        results.update(split_metrics)
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset=[name for name in (data_args.dataset_name, data_args.interaction_dataset) if name])
    return results


__all__ = ["TaskSetup", "main", "setup_classification", "setup_detection", "train_and_evaluate"]
