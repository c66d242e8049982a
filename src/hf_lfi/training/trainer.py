"""`InteractionTrainer`: a `transformers.Trainer` whose loss adds the interaction alignment (paper Eq. 13-14).

Only `compute_loss` changes (architecture.md decision 6); the math is `alignment_loss`. Task loss, alignment
loss and the mean gates g1/g2 of every interaction layer are logged separately (paper Fig. 11).

Teacher maps come from the batch column `interaction_map` (precomputed, the default) or, with `teacher=` an
`InteractionExtractor`, are computed online from the batch's `teacher_images` (the augmented PIL images,
`ImageClassificationTransform(keep_teacher_images=True)`) with the model's label names as the class list. Maps of
different grids in one batch come as a list (the default collator is `collate_with_teacher_images`).
"""

import logging
import math
import os
from collections import defaultdict

import numpy as np
import torch
from datasets import Dataset
from transformers import default_data_collator

from ..modeling.conversion import is_gate_parameter
from .alignment import TeacherMaps, alignment_loss, batch_teacher_maps, place_teacher_maps
from .arguments import InteractionTrainingArguments
from .checkpoints import CheckpointTrainer
from .data import check_interaction_column
from .transforms import TEACHER_IMAGES, collate_with_teacher_images

logger = logging.getLogger(__name__)


class InteractionTrainer(CheckpointTrainer):
    _tag_names = ["hf_lfi", "lfi", "interaction-learning"]
    # both terms are per-batch means: let the Trainer divide them by the gradient-accumulation steps
    loss_is_scaled_for_ga = False

    def __init__(self, *args, teacher=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.teacher = teacher
        if self.data_collator is default_data_collator:  # the same batches, and teacher maps of different grids too
            self.data_collator = collate_with_teacher_images
        if self.compute_loss_func is not None:
            raise ValueError(
                "InteractionTrainer computes its own loss (the model's task loss + alignment_weight x the alignment loss): "
                "compute_loss_func would be ignored. Subclass InteractionTrainer and override compute_loss instead."
            )
        if not isinstance(self.args, InteractionTrainingArguments):
            raise ValueError(
                "InteractionTrainer needs InteractionTrainingArguments (it carries the alignment settings)."
            )
        self._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
        config = self.accelerator.unwrap_model(self.model).config
        if not hasattr(config, "interaction_layer_indices"):
            raise ValueError(
                f"InteractionTrainer trains I-models; got a {type(self.accelerator.unwrap_model(self.model)).__name__} "
                "without interaction queries. Convert it (e.g. IViTForImageClassification.from_vit), or train a "
                "baseline with CheckpointTrainer."
            )
        layers = config.interaction_layer_indices
        chosen = self.args.alignment_layers if self.args.alignment_layers is not None else layers
        unknown = sorted(set(chosen) - set(layers))
        if unknown:
            raise ValueError(
                f"alignment_layers {unknown} carry no interaction queries; interaction layers are {layers}."
            )
        self._interaction_layers = layers
        self._aligned_layers = list(chosen)
        self._aligned_positions = [layers.index(i) for i in chosen]
        self._check_datasets()

    def _check_datasets(self) -> None:
        """What would fail at the first step, or train without a word of warning, refused before training: a
        transformed dataset whose columns `remove_unused_columns` would drop before the transform reads them, and
        teacher maps that are missing (without an online teacher), malformed or all unusable
        (`check_interaction_column`)."""
        evaluation = self.eval_dataset if isinstance(self.eval_dataset, dict) else {"": self.eval_dataset}
        datasets = [self.train_dataset, *evaluation.values()]
        for dataset in datasets:
            if isinstance(dataset, Dataset) and self.args.remove_unused_columns and dataset.format["type"] == "custom":
                raise ValueError(
                    "remove_unused_columns=True drops the dataset's columns that are no argument of the model's "
                    f"forward ({dataset.column_names}) before its transform (set_transform / with_transform) reads "
                    "them: set remove_unused_columns=False."
                )
        train = self.train_dataset
        map_column = self.args.interaction_map_column
        if isinstance(train, Dataset) and self.teacher is None and self.args.alignment_weight > 0:
            grid = check_interaction_column(train, map_column, self.args.interaction_valid_column)
            logger.info("Teacher maps: %d rows on a %d x %d grid", len(train), *grid)

    def create_optimizer(self, model=None):
        """The Trainer's optimizer, with the gate parameters split into groups of their own at
        `learning_rate * gate_learning_rate_multiplier` (same weight decay, same schedule). Built before any state is
        loaded, so a resumed run finds the same groups."""
        created = self.optimizer is None
        optimizer = super().create_optimizer(model)
        multiplier = self.args.gate_learning_rate_multiplier
        if not created or multiplier == 1:
            return optimizer
        model = self.model if model is None else model
        gate_ids = {id(p) for name, p in model.named_parameters() if is_gate_parameter(name)}
        groups = []
        for group in optimizer.param_groups:
            for is_gate in (False, True):
                params = [p for p in group["params"] if (id(p) in gate_ids) == is_gate]
                if params:
                    groups.append({**group, "params": params, "lr": group["lr"] * (multiplier if is_gate else 1)})
        optimizer.param_groups = groups
        return optimizer

    def _set_signature_columns_if_needed(self):
        # remove_unused_columns must keep the teacher-map columns, which the model's forward does not take
        super()._set_signature_columns_if_needed()
        self._signature_columns += [self.args.interaction_map_column, self.args.interaction_valid_column]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        teacher_map = inputs.pop(self.args.interaction_map_column, None)
        valid = inputs.pop(self.args.interaction_valid_column, None)
        teacher_images = inputs.pop(TEACHER_IMAGES, None)
        if self.teacher is not None:  # the online teacher computes the maps of every batch from its images
            if teacher_map is not None:
                raise ValueError(
                    f"The batch has precomputed teacher maps ({self.args.interaction_map_column!r}) and the trainer an "
                    "online teacher= : one of them would be ignored. Drop the map column or the teacher."
                )
            if teacher_images is None and model.training:  # evaluation without images measures the task alone
                raise ValueError(
                    f"teacher= computes maps from the batch's {TEACHER_IMAGES!r}, which it lacks (got {sorted(inputs)}): "
                    "use ImageClassificationTransform(keep_teacher_images=True) and collate_with_teacher_images."
                )
            if teacher_images is not None:
                teacher_map, valid = self._online_teacher_maps(teacher_images, inputs["pixel_values"].device)
        # evaluation without maps measures the task alone; a training batch without them is a data error
        if teacher_map is None and self.args.alignment_weight > 0 and model.training:
            raise ValueError(
                f"The batch has no {self.args.interaction_map_column!r} column (got {sorted(inputs)}); precompute teacher "
                "maps into the dataset, or set alignment_weight=0 to train the task alone."
            )
        smoothed_labels = inputs.pop("labels") if self.label_smoother is not None and "labels" in inputs else None
        if smoothed_labels is not None and not isinstance(smoothed_labels, torch.Tensor):
            raise ValueError(
                f"label_smoothing_factor={self.args.label_smoothing_factor} smooths class-id labels; this model's "
                f"labels are {type(smoothed_labels).__name__} (a detection model's loss has its own class weights)."
            )
        outputs = model(**inputs, output_interactions=True)
        loss = task_loss = outputs.loss if smoothed_labels is None else self.label_smoother(outputs, smoothed_labels)
        logged = {"task_loss": task_loss}
        if teacher_map is not None:
            if getattr(outputs, "interaction_mask", None) is not None:  # dense models: padded feature grids
                teacher_map = place_teacher_maps(teacher_map, outputs.interaction_mask)
            student_maps = [outputs.interaction_maps[i] for i in self._aligned_positions]
            # a diverged forward is reported as such, before alignment_loss refuses its maps
            terms = {"task_loss": task_loss}
            terms.update(
                {f"the student map of layer {self._aligned_layers[i]}": m for i, m in enumerate(student_maps)}
            )
            self._stop_if_non_finite(model, terms)
            align = alignment_loss(
                student_maps, teacher_map, valid, self.args.alignment_direction, self.args.alignment_epsilon
            )
            loss = task_loss + self.args.alignment_weight * align
            logged["alignment_loss"] = align
        losses = ["task_loss", *logged.keys() - {"task_loss"}]  # the terms of the loss, then their parts
        logged.update(getattr(outputs, "loss_dict", None) or {})  # e.g. DETR's loss_ce, loss_giou
        losses += [key for key in logged if key not in losses]
        for layer, gates in zip(self._interaction_layers, outputs.gates):
            g1, g2 = gates.detach().float().mean(dim=(0, 1))
            logged[f"gate_g1/layer_{layer}"], logged[f"gate_g2/layer_{layer}"] = g1, g2
        # one device sync for every logged component
        values = torch.stack(
            [torch.as_tensor(v, device=task_loss.device).detach().float().reshape(()) for v in logged.values()]
        ).tolist()
        self._stop_if_non_finite(model, {key: value for key, value in zip(logged, values) if key in losses})
        mode = "train" if model.training else "eval"
        for key, value in zip(logged, values):
            self._metrics[mode][key].append(value)
        if return_outputs:  # predictions carry logits (and boxes, masks), not the per-layer maps
            kept = {key: getattr(outputs, key, None) for key in ("loss", "logits", "pred_boxes", "pred_masks")}
            kept["loss"] = loss
            return loss, type(outputs)(**{key: value for key, value in kept.items() if value is not None})
        return loss

    def _stop_if_non_finite(self, model, terms: dict) -> None:
        """Stop (`stop_non_finite`) when a loss term or student map is NaN or infinite: before the backward pass of a
        training step, during evaluation. Tensors are read with one device sync."""
        tensors = [key for key, value in terms.items() if isinstance(value, torch.Tensor)]
        finite = {}
        if tensors:
            flags = torch.stack([terms[key].detach().isfinite().all() for key in tensors]).tolist()
            finite = dict(zip(tensors, flags))
        bad = [
            key if key in finite else f"{key} = {value}"
            for key, value in terms.items()
            if not (finite[key] if key in finite else math.isfinite(value))
        ]
        if bad:
            what = f"{', '.join(bad)} {'is' if len(bad) == 1 else 'are'} not finite"
            step = self.state.global_step + 1 if model.training else self.state.global_step
            self.stop_non_finite(what, step, training=model.training)

    def _online_teacher_maps(self, images, device) -> tuple[TeacherMaps, torch.Tensor]:
        config = self.accelerator.unwrap_model(self.model).config
        class_names = [config.id2label[i] for i in range(config.num_labels)]
        results = self.teacher(images, class_names=class_names)
        maps = batch_teacher_maps([torch.from_numpy(r.interaction_map.astype(np.float32)).to(device) for r in results])
        valid = torch.tensor([r.valid for r in results], device=device)
        self._metrics["train" if self.model.training else "eval"]["teacher_valid"].append(valid.float().mean().item())
        return maps, valid

    def create_model_card(
        self, model_name: str | None = None, dataset: str | list[str] | None = None, **kwargs
    ) -> None:
        """The hf_lfi model card (`hub.model_card`): overhead, teacher, this run's accuracies per split, usage.

        Called by `push_to_hub`; `dataset` may name the task data and the interaction dataset (in that order).
        Every I-model kind gets it (its facts, such as the overhead over its source model, come from the model).
        """
        if not self.is_world_process_zero():
            return
        from ..hub import model_card

        model = self.accelerator.unwrap_model(self.model)

        results = {}
        for entry in self.state.log_history:
            results.update({k: v for k, v in entry.items() if isinstance(v, (int, float))})
        datasets = [dataset] if isinstance(dataset, str) else list(dataset or [])
        repo_id = (
            getattr(self, "hub_model_id", None)
            or model_name
            or os.path.basename(os.path.abspath(self.args.output_dir))
        )
        card = model_card(
            model,
            repo_id,
            results=results,
            dataset=datasets[0] if datasets else None,
            interaction_dataset=datasets[1] if len(datasets) > 1 else None,
        )
        card.save(os.path.join(self.args.output_dir, "README.md"))

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "eval" if any(key.startswith("eval_") for key in logs) else "train"
        prefix = "eval_" if mode == "eval" else ""
        collected = {key: sum(values) / len(values) for key, values in self._metrics[mode].items() if values}
        if collected:  # every process logs at the same step: average the components over processes, one collective
            means = torch.tensor(list(collected.values()), device=self.args.device)
            means = self.accelerator.reduce(means, reduction="mean").tolist()
            logs.update({f"{prefix}{key}": value for key, value in zip(collected, means)})
        self._metrics[mode].clear()
        super().log(logs, start_time)


__all__ = ["InteractionTrainer"]
