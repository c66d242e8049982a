import pytest
import torch
from conftest import tiny_ivit_config, tiny_vit
from datasets import Dataset

from hf_lfi import IViTForImageClassification
from hf_lfi.training import InteractionTrainer, InteractionTrainingArguments


def converted_tiny_ivit():
    return IViTForImageClassification.from_vit(tiny_vit())


def fixed_batch_dataset(n=4, with_maps=True):
    g = torch.Generator().manual_seed(0)
    columns = {
        "pixel_values": torch.randn(n, 3, 30, 30, generator=g).tolist(),
        "labels": torch.randint(0, 3, (n,), generator=g).tolist(),
        "extra_text": ["unused"] * n,
    }
    if with_maps:
        maps = torch.zeros(n, 24, 24)
        maps[:, 4:12, 6:14] = 1.0  # the teacher looks at one region
        columns["interaction_map"] = (maps / maps.sum(dim=(1, 2), keepdim=True)).tolist()
    return Dataset.from_dict(columns).with_format("torch")


def training_arguments(tmp_path, **overrides) -> InteractionTrainingArguments:
    values = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        learning_rate=5e-2,
        max_steps=8,
        logging_steps=1,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        seed=0,
    )
    return InteractionTrainingArguments(**{**values, **overrides})


def make_trainer(tmp_path, model, dataset, **overrides):
    return InteractionTrainer(model=model, args=training_arguments(tmp_path, **overrides), train_dataset=dataset)


def test_training_lowers_alignment_loss_and_logs_components(tmp_path):
    model = converted_tiny_ivit()
    dataset = fixed_batch_dataset()
    trainer = make_trainer(tmp_path, model, dataset)
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "alignment_loss" in entry]
    assert len(logs) == 8
    losses = [entry["alignment_loss"] for entry in logs]
    assert losses[-1] < losses[0] - 0.1 and all(b < a for a, b in zip(losses, losses[1:]))
    for key in ("task_loss", "gate_g1/layer_0", "gate_g2/layer_1"):
        assert key in logs[0]
    # the logged alignment loss is the function's value on the same batch before the step
    assert logs[0]["loss"] == pytest.approx(logs[0]["task_loss"] + logs[0]["alignment_loss"], rel=1e-4)


def test_missing_map_column_is_a_clear_error(tmp_path):
    # refused when the trainer is built, before any step
    with pytest.raises(ValueError, match="has no interaction map column 'interaction_map'"):
        make_trainer(tmp_path, converted_tiny_ivit(), fixed_batch_dataset(with_maps=False))


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"alignment_weight": -1.0}, "alignment_weight must be in \\[0, inf\\), got -1.0: a negative weight"),
        ({"alignment_direction": "kl"}, "alignment_direction"),
        ({"alignment_layers": [-1]}, "alignment_layers are layer indices >= 0, got \\[-1\\]"),
        (
            {"interaction_valid_column": "interaction_map"},
            "interaction_map_column and interaction_valid_column are both",
        ),
    ],
)
def test_bad_arguments_are_refused(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        InteractionTrainingArguments(output_dir=str(tmp_path), **overrides)


def test_trainer_refuses_a_model_without_interaction_queries(tmp_path):
    with pytest.raises(ValueError, match="InteractionTrainer trains I-models; got a ViTForImageClassification"):
        make_trainer(tmp_path, tiny_vit(), fixed_batch_dataset())


def test_online_teacher_needs_teacher_images_and_no_precomputed_maps(tmp_path):
    from tiny_llava import tiny_llava

    from hf_lfi.interactions import InteractionExtractor

    extractor = InteractionExtractor(*tiny_llava())
    both = InteractionTrainer(
        model=converted_tiny_ivit(),
        args=make_trainer(tmp_path, converted_tiny_ivit(), None).args,
        train_dataset=fixed_batch_dataset(),
        teacher=extractor,
    )
    with pytest.raises(ValueError, match="precomputed teacher maps .* and the trainer an online teacher="):
        both.train()
    without_images = InteractionTrainer(
        model=converted_tiny_ivit(),
        args=both.args,
        train_dataset=fixed_batch_dataset(with_maps=False),
        teacher=extractor,
    )
    with pytest.raises(ValueError, match="teacher= computes maps from the batch's 'teacher_images', which it lacks"):
        without_images.train()


def test_datasets_that_would_fail_or_train_without_alignment_are_refused_at_init(tmp_path):
    """A transformed dataset with remove_unused_columns=True (the transform would miss its columns: it said 'The
    dataset has no column image'), and a map column without one usable map (alignment would silently be 0)."""
    from synthetic import make_image_dataset
    from transformers import ViTImageProcessor

    from hf_lfi import MaskInteractionMapFn
    from hf_lfi.training import ImageClassificationTransform

    dataset = make_image_dataset(4).map(MaskInteractionMapFn(grid=(4, 4)), batched=True)
    transformed = dataset.with_transform(
        ImageClassificationTransform(ViTImageProcessor(size={"height": 30, "width": 30}), map_column="interaction_map")
    )
    with pytest.raises(ValueError, match="remove_unused_columns=True drops the dataset's columns"):
        make_trainer(tmp_path, converted_tiny_ivit(), transformed, remove_unused_columns=True)
    unusable = dataset.map(lambda row: {"interaction_valid": False})
    with pytest.raises(ValueError, match="None of the 4 teacher maps in 'interaction_map' is usable"):
        make_trainer(tmp_path, converted_tiny_ivit(), unusable)
    make_trainer(tmp_path, converted_tiny_ivit(), unusable, alignment_weight=0.0)  # a baseline may carry them


def test_alignment_layers_must_have_interaction_queries(tmp_path):
    with pytest.raises(ValueError, match="alignment_layers \\[5\\] carry no interaction queries"):
        make_trainer(tmp_path, converted_tiny_ivit(), fixed_batch_dataset(), alignment_layers=[5])


def image_trainer(tmp_path, train, max_steps=1, **kwargs):
    """A seeded I-ViT on 32 x 32 images of the synthetic classes (a 4 x 4 student grid), batches of 4."""
    from synthetic import CLASS_NAMES

    torch.manual_seed(0)
    model = IViTForImageClassification(
        tiny_ivit_config(image_size=32, patch_size=8, id2label=dict(enumerate(CLASS_NAMES)))
    )
    args = training_arguments(tmp_path, learning_rate=5e-5, max_steps=max_steps, remove_unused_columns=False)
    return InteractionTrainer(model=model, args=args, train_dataset=train, **kwargs)


def assert_online_step_equals_precomputed(tmp_path, dataset, extractor):
    """One training step with `extractor` as the online teacher (teacher=, the trainer's default collator) equals
    one on its maps precomputed with `interaction_map_fn`; both with a forced answer, the same for every image so
    that the batch order does not matter. Returns the interaction dataset."""
    from synthetic import CLASS_NAMES
    from tiny_vlms import forced_answers
    from transformers import ViTImageProcessor

    from hf_lfi.interactions import interaction_map_fn
    from hf_lfi.training import ImageClassificationTransform

    image_processor = ViTImageProcessor(size={"height": 32, "width": 32})
    online = dataset.with_transform(ImageClassificationTransform(image_processor, keep_teacher_images=True))
    first = image_trainer(tmp_path, online, teacher=extractor)
    answer = "{'foreground': {green}, 'background': {sky}}"
    with forced_answers(extractor.model, extractor.processor.tokenizer, [answer]):
        first.train()
        mapped = dataset.map(interaction_map_fn(extractor, class_names=CLASS_NAMES), batched=True, batch_size=4)
    precomputed = mapped.with_transform(
        ImageClassificationTransform(image_processor, map_column="interaction_map", valid_column="interaction_valid")
    )
    second = image_trainer(tmp_path, precomputed)
    second.train()
    online_log, column_log = first.state.log_history[0], second.state.log_history[0]
    assert online_log["teacher_valid"] == 1.0 and online_log["alignment_loss"] > 0
    assert online_log["alignment_loss"] == pytest.approx(column_log["alignment_loss"], rel=1e-3)
    assert online_log["loss"] == pytest.approx(column_log["loss"], rel=1e-3)
    return mapped


def test_online_teacher_gives_the_same_loss_as_its_precomputed_maps(tmp_path):
    """teacher=InteractionExtractor computes the maps of each batch; the precomputed column gives the same step."""
    from synthetic import make_image_dataset
    from tiny_llava import tiny_llava

    from hf_lfi.interactions import InteractionExtractor

    llava, processor = tiny_llava()
    assert_online_step_equals_precomputed(tmp_path, make_image_dataset(4), InteractionExtractor(llava, processor))


def test_teacher_maps_on_different_grids_train_as_if_resampled_first(tmp_path):
    """An interaction dataset whose maps come on four grids (a Qwen-style teacher on images of different sizes)
    batches through the transform and the trainer's default collator and trains: the same steps as its maps
    resampled to the student's 4 x 4 grid beforehand."""
    from synthetic import make_image_dataset
    from transformers import ViTImageProcessor

    from hf_lfi.training import ImageClassificationTransform, collate_with_teacher_images, resample_teacher_map

    uniform = [[[0.25, 0.25], [0.25, 0.25]]] * 4
    with_maps = make_image_dataset(4).add_column("interaction_map", uniform)
    assert image_trainer(tmp_path, with_maps).data_collator is collate_with_teacher_images

    generator = torch.Generator().manual_seed(0)
    maps = [torch.rand(rows, cols, generator=generator) for rows, cols in ((4, 6), (6, 4), (8, 8), (5, 3))]
    maps = [m / m.sum() for m in maps]
    on_student_grid = [resample_teacher_map(m[None], (4, 4))[0] for m in maps]
    image_processor = ViTImageProcessor(size={"height": 32, "width": 32})
    losses = []
    for teacher_maps in (maps, on_student_grid):
        dataset = make_image_dataset(4).add_column("interaction_map", [m.tolist() for m in teacher_maps])
        dataset = dataset.with_transform(ImageClassificationTransform(image_processor, map_column="interaction_map"))
        trainer = image_trainer(tmp_path, dataset, max_steps=3)  # collate_with_teacher_images by default
        trainer.train()
        losses.append([entry["alignment_loss"] for entry in trainer.state.log_history if "alignment_loss" in entry])
    assert len(losses[0]) == 3 and losses[0][0] > 0
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_a_qwen_teacher_on_images_of_different_sizes_trains_online_as_on_its_precomputed_maps(tmp_path, caplog):
    """Qwen2-VL looks at each image at its own size, so its maps come on a grid per image: run online (teacher=) or
    precomputed into an interaction dataset of several grids (interaction_map_fn), one training step is the same,
    and each map reaches the loss on its own grid."""
    from synthetic import make_image_dataset
    from tiny_vlms import tiny_vlm

    from hf_lfi import interaction_dataset_card
    from hf_lfi.interactions import InteractionExtractor
    from hf_lfi.training import check_interaction_column

    # (width, height): 4 x 4, 3 x 8, 8 x 3 and 4 x 6 grids of merged patches
    sizes = [(32, 32), (64, 24), (24, 64), (48, 32)]
    dataset = make_image_dataset(4).remove_columns("mask")
    dataset = dataset.map(lambda row, i: {"image": row["image"].resize(sizes[i])}, with_indices=True)
    qwen, processor = tiny_vlm("qwen2_vl")
    extractor = InteractionExtractor(qwen, processor, max_new_tokens=24)
    precomputed = assert_online_step_equals_precomputed(tmp_path, dataset, extractor)
    grids = [tuple(len(axis) for axis in (m, m[0])) for m in precomputed["interaction_map"]]
    assert grids == [(4, 4), (3, 8), (8, 3), (4, 6)]
    with caplog.at_level("INFO", logger="hf_lfi.training.data"):
        check_interaction_column(precomputed, "interaction_map", "interaction_valid")
    assert "Teacher maps come on 4 grids" in caplog.text
    card = interaction_dataset_card(precomputed)
    assert card.data.hf_lfi["grid"] == "4 x 4, 3 x 8, 8 x 3, 4 x 6"
    assert "on a grid per image (4 x 4: 1 rows, 3 x 8: 1 rows, 8 x 3: 1 rows, 4 x 6: 1 rows)" in str(card)


def test_trainer_aligns_idetr_maps_on_padded_grids(tmp_path):
    """Detection batches: list-of-dict labels, pixel masks, teacher maps placed on each image's real feature area."""
    from conftest import tiny_detr

    from hf_lfi import IDetrForObjectDetection

    torch.manual_seed(0)
    model = IDetrForObjectDetection.from_detr(tiny_detr())
    teacher = torch.zeros(12, 12)
    teacher[2:6, 3:9] = 1 / 24
    rows = []
    for i in range(4):
        mask = torch.ones(64, 48, dtype=torch.long)
        mask[:, 32 if i % 2 else 48 :] = 0
        rows.append(
            {
                "pixel_values": torch.randn(3, 64, 48),
                "pixel_mask": mask,
                "interaction_map": teacher,
                "labels": {"class_labels": torch.tensor([i % 3]), "boxes": torch.tensor([[0.5, 0.4, 0.3, 0.2]])},
            }
        )

    def collate(examples):
        batch = {k: torch.stack([e[k] for e in examples]) for k in ("pixel_values", "pixel_mask", "interaction_map")}
        batch["labels"] = [e["labels"] for e in examples]
        return batch

    args = training_arguments(tmp_path, max_steps=6, remove_unused_columns=False)
    trainer = InteractionTrainer(model=model, args=args, train_dataset=rows, data_collator=collate)
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "alignment_loss" in entry]
    assert {"loss_ce", "loss_bbox", "loss_giou", "cardinality_error", "task_loss", "gate_g1/layer_0"} <= set(logs[0])
    assert logs[-1]["alignment_loss"] < logs[0]["alignment_loss"]
    assert logs[0]["loss"] == pytest.approx(logs[0]["task_loss"] + logs[0]["alignment_loss"], rel=1e-4)


def test_model_card_written_by_the_trainer(tmp_path):
    """I-ViT runs get the hf_lfi card with their accuracies; an I-DETR run falls back to the Trainer's own card."""
    from conftest import tiny_detr
    from huggingface_hub import ModelCard

    from hf_lfi import IDetrForObjectDetection

    trainer = make_trainer(tmp_path / "ivit", converted_tiny_ivit(), fixed_batch_dataset())
    trainer.state.log_history = [{"eval_accuracy": 0.75, "step": 1}]
    trainer.create_model_card(model_name="org/i-vit-tiny", dataset=["org/data", "org/data-lfi"])
    card = ModelCard.load(tmp_path / "ivit" / "README.md")
    assert card.data.datasets == ["org/data", "org/data-lfi"] and "| validation | 0.7500 |" in card.text
    detr_args = InteractionTrainingArguments(output_dir=str(tmp_path / "idetr"), report_to="none", use_cpu=True)
    detr_trainer = InteractionTrainer(model=IDetrForObjectDetection.from_detr(tiny_detr()), args=detr_args)
    detr_trainer.create_model_card(model_name="org/i-detr-tiny")
    detr_card = ModelCard.load(tmp_path / "idetr" / "README.md")  # the hf_lfi card for every model kind (issue 13)
    assert "interaction queries" in detr_card.text and "for the DETR" in detr_card.text
    assert detr_card.data.pipeline_tag == "object-detection" and "AutoModelForObjectDetection" in detr_card.text


def test_gate_learning_rate_multiplier_groups_and_resume(tmp_path):
    """Gates get their own parameter groups at lr x multiplier (same schedule); a resumed run rebuilds the same groups
    and ends with the uninterrupted run's weights."""
    dataset = fixed_batch_dataset()
    settings = dict(
        gate_learning_rate_multiplier=10.0,
        learning_rate=1e-3,
        save_strategy="steps",
        save_steps=4,
        lr_scheduler_type="linear",
    )
    trainer = make_trainer(tmp_path / "full", converted_tiny_ivit(), dataset, **settings)
    trainer.train()
    optimizer = trainer.optimizer
    gate_ids = {id(p) for n, p in trainer.model.named_parameters() if ".gate." in n}
    assert gate_ids
    initial = {
        ("gate" if id(g["params"][0]) in gate_ids else "other"): g["initial_lr"] for g in optimizer.param_groups
    }
    assert initial == {"gate": pytest.approx(1e-2), "other": pytest.approx(1e-3)}
    for group in optimizer.param_groups:  # each group holds only gates or only other parameters
        assert len({id(p) in gate_ids for p in group["params"]}) == 1

    resumed = make_trainer(tmp_path / "full", converted_tiny_ivit(), dataset, **settings)
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-4"))
    for (name, a), b in zip(trainer.model.named_parameters(), resumed.model.parameters()):
        torch.testing.assert_close(a, b, msg=name)


def test_gate_multiplier_moves_gates_further(tmp_path):
    moved = {}
    for multiplier in (1.0, 10.0):
        model = converted_tiny_ivit()
        make_trainer(
            tmp_path / str(multiplier),
            model,
            fixed_batch_dataset(),
            learning_rate=1e-3,
            gate_learning_rate_multiplier=multiplier,
        ).train()
        moved[multiplier] = max(
            (m.gate.bias - torch.tensor([-m.gate.init_bias, m.gate.init_bias])).abs().max().item()
            for m in model.modules()
            if hasattr(m, "interaction_q_proj")
        )
    assert moved[10.0] > 5 * moved[1.0] > 0
