"""Object-detection data, metrics and the recipe (`hf-lfi train`) for I-DETR / DETR on a small COCO-format dataset."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_detr_kwargs, tiny_segmentation_kwargs
from datasets import ClassLabel, DatasetDict, Features, List, Value
from synthetic import CLASS_NAMES, make_image_dataset
from test_run import REPO
from transformers import AutoImageProcessor, AutoModelForObjectDetection, DetrImageProcessor
from transformers.trainer_utils import EvalPrediction

import hf_lfi
from hf_lfi import metrics, recipe
from hf_lfi.students import student_for_method
from hf_lfi.training.detection import DetectionTransform, collate_detection, make_detection_metrics


def detection_dataset(n: int, seed: int = 0, size: int = 32):
    """The synthetic squares as COCO-format detection rows: the coloured square is the object (box from its mask)."""
    dataset = make_image_dataset(n, size=size, seed=seed)

    def objects(row):
        ys, xs = np.nonzero(np.asarray(row["mask"]))
        box = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]
        return {"objects": {"bbox": [box], "category": [row["label"]]}}

    features = Features(
        {
            "image": dataset.features["image"],
            "mask": dataset.features["mask"],
            "objects": {
                "bbox": List(List(Value("float32"), length=4)),
                "category": List(ClassLabel(names=CLASS_NAMES)),
            },
        }
    )
    return dataset.map(objects, remove_columns=["label"], features=features)


def test_transform_and_collator_pad_images_and_keep_targets():
    processor = DetrImageProcessor(size={"shortest_edge": 32, "longest_edge": 48})
    dataset = detection_dataset(2, size=32)
    rows = dataset[:2]
    rows["image"][1] = rows["image"][1].crop((0, 0, 32, 24))  # a smaller second image
    rows["objects"][1] = {"bbox": [[2.0, 2.0, 10.0, 10.0]], "category": [1]}
    out = DetectionTransform(processor, num_labels=3)(rows)
    batch = collate_detection([{key: out[key][i] for key in out} for i in range(2)])
    # the 32x24 image is resized to 32 px high, 42 px wide: the first (32x32) one is padded on the right
    assert batch["pixel_values"].shape == (2, 3, 32, 42) and batch["pixel_mask"][0, :, 32:].sum() == 0
    assert batch["pixel_mask"][0, :, :32].all() and batch["pixel_mask"][1].all()
    box = rows["objects"][0]["bbox"][0]
    expected = torch.tensor([(box[0] + box[2] / 2) / 32, (box[1] + box[3] / 2) / 32, box[2] / 32, box[3] / 32])
    torch.testing.assert_close(batch["labels"][0]["boxes"][0], expected)
    with pytest.raises(ValueError, match="lies outside the 32x32 image"):
        DetectionTransform(processor, num_labels=3)(
            {"image": rows["image"][:1], "objects": [{"bbox": [[20.0, 20.0, 30.0, 5.0]], "category": [0]}]}
        )
    with pytest.raises(ValueError, match="unknown category ids \\[7\\]"):
        DetectionTransform(processor, num_labels=3)(
            {"image": rows["image"][:1], "objects": [{"bbox": [[2.0, 2.0, 5.0, 5.0]], "category": [7]}]}
        )


def test_detection_metrics_score_perfect_predictions_one():
    processor = DetrImageProcessor(size={"shortest_edge": 32, "longest_edge": 48})
    targets = [
        {
            "class_labels": torch.tensor([2]),
            "boxes": torch.tensor([[0.5, 0.4, 0.5, 0.3]]),
            "orig_size": torch.tensor([40, 60]),
            "size": torch.tensor([32, 48]),
        },
        {
            "class_labels": torch.tensor([0, 1]),
            "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.4], [0.7, 0.6, 0.3, 0.3]]),
            "orig_size": torch.tensor([50, 50]),
            "size": torch.tensor([32, 32]),
        },
    ]
    logits = torch.full((2, 4, 4), -10.0)
    pred_boxes = torch.full((2, 4, 4), 0.5)
    for i, target in enumerate(targets):
        for q, (label, box) in enumerate(zip(target["class_labels"], target["boxes"])):
            logits[i, q, label] = 10.0
            pred_boxes[i, q] = box
        logits[i, len(target["class_labels"]) :, 3] = 10.0  # the other queries predict "no object"
    compute = make_detection_metrics(processor, metrics.load("coco_map"))
    result = compute(EvalPrediction(predictions=[(logits.numpy(), pred_boxes.numpy())], label_ids=[targets]))
    assert result["map"] == pytest.approx(1.0) and result["map_75"] == pytest.approx(1.0)


@pytest.fixture(scope="module")
def detection_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("detection")
    DatasetDict({"train": detection_dataset(16), "validation": detection_dataset(8, seed=1)}).save_to_disk(
        str(root / "data")
    )
    hf_lfi.IDetrConfig(**tiny_detr_kwargs()).save_pretrained(root / "config")
    return root


def detection_argv(root, output_dir, *extra):
    return [
        "--method",
        "idetr",
        "--config_name",
        str(root / "config"),
        "--dataset_name",
        str(root / "data"),
        "--teacher",
        "mask",
        "--mask_teacher_grid",
        "8",
        "--detection_shortest_edge",
        "32",
        "--detection_longest_edge",
        "48",
        "--output_dir",
        str(output_dir),
        "--max_steps",
        "3",
        "--per_device_train_batch_size",
        "4",
        "--per_device_eval_batch_size",
        "4",
        "--learning_rate",
        "1e-4",
        "--logging_steps",
        "1",
        "--save_strategy",
        "no",
        "--report_to",
        "none",
        "--seed",
        "0",
        "--use_cpu",
        "true",
        *extra,
    ]


def test_idetr_and_detr_runs_end_to_end(detection_data, tmp_path):
    results = recipe.main(detection_argv(detection_data, tmp_path / "idetr"))
    assert {"validation_map", "validation_map_50", "validation_loss"} <= set(results)
    logs = [
        e for e in json.loads((tmp_path / "idetr" / "trainer_state.json").read_text())["log_history"] if "loss" in e
    ]
    assert {"alignment_loss", "task_loss", "loss_ce", "loss_giou", "gate_g1/layer_0"} <= set(logs[0])
    model = AutoModelForObjectDetection.from_pretrained(tmp_path / "idetr")
    assert isinstance(model, hf_lfi.IDetrForObjectDetection) and model.config.id2label[0] == "red"
    baseline = recipe.main(detection_argv(detection_data, tmp_path / "detr", "--method", "detr"))
    assert "validation_map" in baseline
    assert AutoModelForObjectDetection.from_pretrained(tmp_path / "detr").config.model_type == "detr"


@pytest.mark.parametrize("method", ["icdetr", "cdetr"])
def test_conditional_detr_few_shot_runs_end_to_end(detection_data, tmp_path, method):
    hf_lfi.IConditionalDetrConfig(**tiny_detr_kwargs()).save_pretrained(tmp_path / "config")
    argv = detection_argv(detection_data, tmp_path / "out", "--method", method, "--few_shot", "2")
    argv += ["--config_name", str(tmp_path / "config")]
    results = recipe.main(argv)
    assert {"validation_map", "validation_map_50", "validation_map_small", "validation_loss"} <= set(results)
    logs = [e for e in json.loads((tmp_path / "out" / "trainer_state.json").read_text())["log_history"] if "loss" in e]
    model = AutoModelForObjectDetection.from_pretrained(tmp_path / "out")
    if method == "icdetr":
        assert {"alignment_loss", "loss_ce", "gate_g1/layer_0"} <= set(logs[0])
        assert isinstance(model, hf_lfi.IConditionalDetrForObjectDetection)
    else:
        assert model.config.model_type == "conditional_detr" and "alignment_loss" not in logs[0]
    assert model.config.num_labels == 3 and model.config.id2label[2] == "blue"
    assert type(AutoImageProcessor.from_pretrained(tmp_path / "out")).__name__.startswith(
        "ConditionalDetrImageProcessor"
    )


def test_bad_boxes_stop_the_run_with_their_row(detection_data, tmp_path):
    bad = detection_dataset(8).map(
        lambda row, i: {
            "objects": {
                "bbox": [[40.0, 1.0, 5.0, 5.0]] if i == 3 else row["objects"]["bbox"],
                "category": row["objects"]["category"],
            }
        },
        with_indices=True,
    )
    DatasetDict({"train": bad, "validation": detection_dataset(4)}).save_to_disk(str(tmp_path / "bad"))
    argv = detection_argv(
        detection_data, tmp_path / "out", "--dataset_name", str(tmp_path / "bad"), "--train_augmentation", "false"
    )
    with pytest.raises(ValueError, match="lies outside the 32x32 image"):
        recipe.main(argv)
    assert not Path(tmp_path / "out" / "trainer_state.json").exists()


def test_few_shot_subset_covers_every_category_k_times():
    from hf_lfi.training.detection import few_shot_subset

    dataset = detection_dataset(30)
    subset = few_shot_subset(dataset, shots=3, seed=1)
    counts = np.bincount([c for objects in subset["objects"] for c in objects["category"]], minlength=3)
    assert (counts >= 3).all() and len(subset) < len(dataset)
    assert subset["objects"] == few_shot_subset(dataset, shots=3, seed=1)["objects"]
    assert subset["objects"] != few_shot_subset(dataset, shots=3, seed=2)["objects"]
    with pytest.raises(ValueError, match="shots must be >= 1"):
        few_shot_subset(dataset, shots=0)


def test_task_flag_selects_the_detection_model(detection_data):
    def trained(*argv):
        model_args, _, _ = recipe.parse_arguments(list(argv))
        student = student_for_method(model_args.method)
        return model_args.method, student.model_class(model_args.task), student.baseline_class(model_args.task)

    assert trained("--task", "object-detection")[:2] == ("idetr", hf_lfi.IDetrForObjectDetection)
    assert trained("--task", "object-detection", "--method", "detr")[0] == "detr"
    assert trained("--task", "segmentation")[:2] == ("idetr", hf_lfi.IDetrForSegmentation)
    assert trained("--method", "cdetr")[2].__name__ == "ConditionalDetrForObjectDetection"
    assert trained("--method", "detr")[2].__name__ == "DetrForObjectDetection"
    assert trained()[:2] == ("ivit", hf_lfi.IViTForImageClassification)
    with pytest.raises(ValueError, match="--method icdetr does not do segmentation"):
        recipe.parse_arguments(["--task", "segmentation", "--method", "icdetr"])
    with pytest.raises(ValueError, match="--method vit does not do object-detection"):
        recipe.parse_arguments(["--task", "object-detection", "--method", "vit"])
    with pytest.raises(ValueError, match="--method ivit does not do object-detection"):
        recipe.parse_arguments(["--task", "object-detection", "--method", "ivit"])


@pytest.mark.parametrize(
    "task, model_class, config_class, processor_name, config_kwargs",
    [
        ("object-detection", "IDetrForObjectDetection", "IDetrConfig", "DetrImageProcessorPil", tiny_detr_kwargs),
        (
            "object-detection",
            "IConditionalDetrForObjectDetection",
            "IConditionalDetrConfig",
            "ConditionalDetrImageProcessorPil",
            tiny_detr_kwargs,
        ),
        (
            "image-segmentation",
            "IDetrForSegmentation",
            "IDetrConfig",
            "DetrImageProcessorPil",
            tiny_segmentation_kwargs,
        ),
    ],
)
def test_pipelines_take_an_interaction_model_folder_without_warning(
    tmp_path, task, model_class, config_class, processor_name, config_kwargs
):
    import logging

    import transformers
    from PIL import Image
    from transformers import pipeline

    model = getattr(hf_lfi, model_class)(getattr(hf_lfi, config_class)(**config_kwargs()))
    if task == "image-segmentation":  # confident class-0 queries with full masks: the pipeline must find segments
        with torch.no_grad():
            model.detr.class_labels_classifier.bias[0] = 20.0
            model.mask_head.output_conv.bias.fill_(20.0)
    model.save_pretrained(tmp_path)
    getattr(transformers, processor_name)(size={"shortest_edge": 32, "longest_edge": 48}).save_pretrained(tmp_path)
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("transformers.pipelines.base")
    logger.addHandler(handler)
    try:
        runner = pipeline(task, model=str(tmp_path))
    finally:
        logger.removeHandler(handler)
    assert isinstance(runner.model, getattr(hf_lfi, model_class))
    assert not [r for r in records if "is not supported" in r.getMessage()]
    if task == "object-detection":
        found = runner(Image.new("RGB", (40, 32)), threshold=0.0)
        assert found and set(found[0]) == {"score", "label", "box"}
    else:
        found = runner(Image.new("RGB", (40, 32)), subtask="instance", threshold=0.0)
        assert found and all(segment["mask"].size == (40, 32) for segment in found)


@pytest.mark.skipif(
    not (REPO.parent / "shared" / "data" / "emoji-shift").exists(), reason="needs ../shared/data/emoji-shift"
)
def test_idetr_emoji_shift_config_runs_as_written(tmp_path, monkeypatch):
    """The shipped config, shortened, from the repository root: no data preparation step beforehand."""
    caps = [
        "--output_dir",
        str(tmp_path),
        "--max_steps",
        "1",
        "--max_train_samples",
        "16",
        "--max_eval_samples",
        "4",
        "--per_device_train_batch_size",
        "4",
        "--per_device_eval_batch_size",
        "4",
        "--use_cpu",
        "true",
    ]
    monkeypatch.chdir(REPO)
    results = recipe.main(["--config", "idetr_emoji_shift", *caps])
    assert {"validation_map", "test_iid_map", "test_shifted_map"} <= set(results)
