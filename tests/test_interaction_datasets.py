import json
import pickle

import numpy as np
import pytest
import torch
from datasets import Dataset, Features, load_from_disk
from datasets.fingerprint import Hasher
from synthetic import CLASS_NAMES, make_image_dataset
from tiny_llava import tiny_llava

import hf_lfi
from hf_lfi.interactions import (
    InteractionExtractor,
    MaskInteractionMapFn,
    interaction_map_fn,
    plot_interaction_maps,
    precompute_interactions,
)
from hf_lfi.interactions.fingerprint import weights_fingerprint


@pytest.fixture(scope="module")
def teacher():
    return tiny_llava()


def test_map_function_adds_maps_and_provenance_columns(teacher):
    model, processor = teacher
    map_fn = interaction_map_fn(InteractionExtractor(model, processor, max_new_tokens=4), class_names=CLASS_NAMES)
    mapped = make_image_dataset(5).map(map_fn, batched=True, batch_size=2)
    for column in (
        "interaction_map",
        "interaction_valid",
        "interaction_status",
        "interaction_prompt",
        "interaction_answer",
        "interaction_foreground",
        "interaction_background",
        "interaction_teacher",
    ):
        assert column in mapped.column_names
    assert mapped.features["interaction_map"].feature.feature.dtype == "float16"
    assert np.asarray(mapped[0]["interaction_map"]).shape == (4, 4)
    assert set(mapped["interaction_prompt"]) == {"classification_fg_bg"}
    assert json.loads(mapped[0]["interaction_teacher"])["prompt"] == "classification_fg_bg"
    # a random tiny teacher answers nonsense: every row says why it has no map
    for status, valid, interaction in zip(
        mapped["interaction_status"], mapped["interaction_valid"], mapped["interaction_map"]
    ):
        assert valid == (status in ("ok", "no_background"))
        assert valid or np.asarray(interaction, dtype=np.float32).sum() == 0


def test_map_function_fingerprint_is_its_teacher_and_settings_not_its_weights(teacher):
    model, processor = teacher
    first = interaction_map_fn(InteractionExtractor(model, processor), class_names=CLASS_NAMES)
    again = interaction_map_fn(InteractionExtractor(model, processor), class_names=CLASS_NAMES)
    other_prompt = interaction_map_fn(InteractionExtractor(model, processor, prompt="classification_object"))
    other_layers = interaction_map_fn(InteractionExtractor(model, processor, layers=[1]), class_names=CLASS_NAMES)
    assert Hasher.hash(first) == Hasher.hash(again)
    assert len({Hasher.hash(first), Hasher.hash(other_prompt), Hasher.hash(other_layers)}) == 3
    assert len(pickle.dumps(first)) < 10_000  # no weights inside
    unpickled = pickle.loads(pickle.dumps(first))
    with pytest.raises(RuntimeError, match="num_proc=1"):
        unpickled({"image": []})
    with pytest.raises(ValueError, match="pass class_names"):
        interaction_map_fn(InteractionExtractor(model, processor))
    with pytest.raises(ValueError, match="repeated: \\['owl'\\]"):
        interaction_map_fn(InteractionExtractor(model, processor), class_names=["owl", "red", "owl"])


class FailingMaskMapFn(MaskInteractionMapFn):
    """A mask teacher that records the rows it maps and can be made to crash (state kept outside the instance, so
    the fingerprint does not change between the runs)."""

    calls: list = []
    crash_after: int | None = None

    def __call__(self, batch):
        FailingMaskMapFn.calls.extend(batch["label"])
        if FailingMaskMapFn.crash_after is not None and len(FailingMaskMapFn.calls) > FailingMaskMapFn.crash_after:
            raise KeyboardInterrupt("interrupted")
        return super().__call__(batch)


def test_interrupted_precompute_resumes_without_redoing_finished_rows(tmp_path):
    dataset = make_image_dataset(10).map(lambda row, i: {"label": i % 3, "row": i}, with_indices=True)
    map_fn = FailingMaskMapFn(grid=(4, 4))
    FailingMaskMapFn.calls, FailingMaskMapFn.crash_after = [], 7  # dies inside the third 3-row shard
    with pytest.raises(KeyboardInterrupt):
        precompute_interactions(dataset, map_fn, tmp_path, shard_size=3, batch_size=3)
    assert sorted(p.name for p in (tmp_path / "shards").iterdir() if not p.name.endswith(".partial")) == [
        "00000-of-00004",
        "00001-of-00004",
    ]
    FailingMaskMapFn.calls, FailingMaskMapFn.crash_after = [], None
    result = precompute_interactions(dataset, map_fn, tmp_path, shard_size=3, batch_size=3)
    assert len(FailingMaskMapFn.calls) == 4  # rows 6..9 only; rows 0..5 were not computed again
    assert result["row"] == list(range(10)) and "interaction_map" in result.column_names
    straight = dataset.map(MaskInteractionMapFn(grid=(4, 4)), batched=True)
    np.testing.assert_array_equal(np.asarray(result["interaction_map"]), np.asarray(straight["interaction_map"]))
    with pytest.raises(ValueError, match="other settings \\(\\['map_fn_fingerprint', 'map_fn.grid'\\]"):
        precompute_interactions(dataset, MaskInteractionMapFn(grid=(8, 8)), tmp_path, shard_size=3)


GOOD = "{'foreground': 'blue', 'background': 'sky'}"


def test_a_first_batch_without_parsed_words_does_not_break_later_batches(teacher, tmp_path):
    """The map functions declare their features: a first batch of malformed answers (no words, so nothing to infer
    the word columns' type from) is followed by batches with words, through `ds.map` and the precompute."""
    model, processor = teacher
    answers = ["no idea", "it is a bird", GOOD, "{'foreground': 'red'}", GOOD, "???"]
    dataset = make_image_dataset(6).add_column("answer", answers)
    map_fn = interaction_map_fn(
        InteractionExtractor(model, processor), class_names=CLASS_NAMES, answer_column="answer"
    )
    mapped = dataset.map(map_fn, batched=True, batch_size=2, features=map_fn.output_features(dataset.features))
    assert mapped["interaction_status"] == ["malformed_answer"] * 2 + ["ok", "no_background", "ok", "malformed_answer"]
    assert mapped["interaction_foreground"] == [[], [], ["blue"], ["red"], ["blue"], []]
    assert mapped["interaction_background"][2] == ["sky"]
    assert mapped.features["interaction_foreground"] == map_fn.features["interaction_foreground"]
    precomputed = precompute_interactions(dataset, map_fn, tmp_path, shard_size=2, batch_size=2)
    assert precomputed["interaction_status"] == mapped["interaction_status"]
    np.testing.assert_array_equal(
        np.asarray(precomputed["interaction_map"][2]), np.asarray(mapped["interaction_map"][2])
    )


def test_plain_map_without_features_types_its_columns(teacher):
    """`ds.map(map_fn, batched=True)` without `features=`: the map functions return typed columns, so a first batch
    with no parsed word (every word list empty) or only empty masks types the columns as later batches need."""
    model, processor = teacher
    answers = ["no idea", "???", GOOD, "{'foreground': {red, blue}}", "it is a bird", GOOD]
    dataset = make_image_dataset(6).add_column("answer", answers)
    map_fn = interaction_map_fn(
        InteractionExtractor(model, processor), class_names=CLASS_NAMES, answer_column="answer"
    )
    mapped = dataset.map(map_fn, batched=True, batch_size=2)
    assert mapped.features == map_fn.output_features(dataset.features)
    assert mapped["interaction_foreground"] == [[], [], ["blue"], ["red", "blue"], [], ["blue"]]
    assert mapped["interaction_valid"] == [False, False, True, True, False, True]

    # streamed: the rows hold Python flags and strings, and a dataset built from them infers the same types
    rows = list(dataset.to_iterable_dataset().map(map_fn, batched=True, batch_size=2))
    assert [type(row["interaction_valid"]) for row in rows] == [bool] * 6
    assert [row["interaction_status"] for row in rows] == mapped["interaction_status"]
    assert [list(row["interaction_foreground"]) for row in rows] == mapped["interaction_foreground"]
    columns = [name for name in map_fn.features if name != "interaction_map"]
    streamed = Dataset.from_list([{name: row[name] for name in columns} for row in rows])
    assert streamed.features == Features({name: map_fn.features[name] for name in columns})

    masks = [np.zeros((8, 8), np.uint8)] * 2 + [np.full((8, 8), 255, np.uint8)] * 2
    mask_fn = MaskInteractionMapFn(grid=(4, 4))
    masked = Dataset.from_dict({"mask": masks}).map(mask_fn, batched=True, batch_size=2)
    assert masked.features == mask_fn.output_features(Dataset.from_dict({"mask": masks}).features)
    assert masked["interaction_status"] == ["empty_mask"] * 2 + ["ok"] * 2


def test_plain_detection_map_types_the_columns_of_failed_questions(teacher):
    """The detection map function through a plain `ds.map` without `features=`: the tiny random teacher's answers
    do not parse, so every row's word lists are empty, the case in which `datasets` would infer lists of nulls."""
    model, processor = teacher
    detector = interaction_map_fn(
        InteractionExtractor(model, processor, prompt="detection_fg_bg", max_new_tokens=4), category_names=["dog"]
    )
    dataset = make_image_dataset(4).add_column("objects", [{"bbox": [[1, 1, 10, 10]], "category": [0]}] * 4)
    mapped = dataset.map(detector, batched=True, batch_size=2)
    assert not any(mapped["interaction_valid"])  # the case this test is about: no row has a word
    assert mapped.features == detector.output_features(dataset.features)
    assert mapped["interaction_foreground"] == [[]] * 4 and mapped["interaction_background"] == [[]] * 4
    assert all(np.asarray(m, dtype=np.float32).sum() == 0 for m in mapped["interaction_map"])


def test_map_functions_refuse_unbatched_calls_and_bad_settings(teacher):
    model, processor = teacher
    dataset = make_image_dataset(2)
    with pytest.raises(
        ValueError, match="maps batches, but got one row .* call Dataset.map\\(map_fn, batched=True\\)"
    ):
        dataset.map(interaction_map_fn(InteractionExtractor(model, processor), class_names=CLASS_NAMES))
    with pytest.raises(ValueError, match="MaskInteractionMapFn maps batches"):
        dataset.map(MaskInteractionMapFn(grid=(4, 4)))
    for settings, message in [
        (dict(grid=24), "grid must be \\(rows, columns\\), got 24"),
        (dict(grid=(0, 4)), "grid must be two positive integers"),
        (dict(blur_sigma=float("nan")), "blur_sigma must be >= 0 and finite, got nan"),
        (dict(leak=float("nan")), "leak must be in \\[0, 1\\], got nan"),
    ]:
        with pytest.raises(ValueError, match=message):
            MaskInteractionMapFn(**settings)
    detector = interaction_map_fn(
        InteractionExtractor(model, processor, prompt="detection_fg_bg"), category_names=["dog"]
    )
    with pytest.raises(ValueError, match="must hold COCO-style objects .*got \\['boxes', 'category'\\]"):
        detector({"image": dataset["image"][:1], "objects": [{"boxes": [[1, 1, 4, 4]], "category": [0]}]})
    with pytest.raises(ValueError, match="category_names is for detection prompts; 'classification_fg_bg' is a"):
        interaction_map_fn(InteractionExtractor(model, processor), category_names=CLASS_NAMES)
    answered = dataset.add_column("answer", [None, GOOD])
    reading = interaction_map_fn(
        InteractionExtractor(model, processor), class_names=CLASS_NAMES, answer_column="answer"
    )
    with pytest.raises(ValueError, match="Rows \\[0\\] of the batch have no answer in 'answer' \\(got NoneType\\)"):
        answered.map(reading, batched=True)


def test_a_teacher_with_other_weights_under_the_same_name_refuses_to_resume(teacher, tmp_path):
    model, processor = teacher
    other, _ = tiny_llava()  # the same name and seed: the same weights ...
    assert weights_fingerprint(other) == weights_fingerprint(model)
    with torch.no_grad():  # ... until one attention weight of one layer moves
        other.model.language_model.layers[1].self_attn.k_proj.weight[0, 0] += 1e-3
    assert weights_fingerprint(other) != weights_fingerprint(model)
    assert other.config._name_or_path == model.config._name_or_path
    dataset = make_image_dataset(4).add_column("answer", [GOOD] * 4)

    def map_fn(teacher_model):
        extractor = InteractionExtractor(teacher_model, processor)
        return interaction_map_fn(extractor, class_names=CLASS_NAMES, answer_column="answer")

    precompute_interactions(dataset, map_fn(model), tmp_path, shard_size=2)
    with pytest.raises(ValueError, match="map_fn.teacher_weights_sha256"):
        precompute_interactions(dataset, map_fn(other), tmp_path, shard_size=2)


def test_interaction_dataset_round_trip_with_card(tmp_path):
    dataset = make_image_dataset(6).map(MaskInteractionMapFn(grid=(8, 8)), batched=True)
    card = hf_lfi.save_interaction_dataset(dataset, tmp_path / "emoji-lfi")
    reloaded = load_from_disk(str(tmp_path / "emoji-lfi"))
    assert reloaded.column_names == dataset.column_names
    np.testing.assert_array_equal(np.asarray(reloaded["interaction_map"]), np.asarray(dataset["interaction_map"]))
    text = (tmp_path / "emoji-lfi" / "README.md").read_text()
    assert text == str(card)
    assert "mask teacher (column 'mask')" in text and "| ok | 6 |" in text and "8 x 8" in text
    assert card.data.hf_lfi["status_counts"] == {"ok": 6} and "hf_lfi" in card.data.tags
    with pytest.raises(ValueError, match="not an interaction dataset"):
        hf_lfi.interaction_dataset_card(make_image_dataset(2))


def test_plot_interaction_maps_writes_a_png(tmp_path):
    dataset = make_image_dataset(3)
    maps = [[np.asarray(m, dtype=np.float32) / 255, np.random.rand(4, 4)] for m in dataset["mask"]]
    figure = plot_interaction_maps(
        dataset["image"], maps, titles=["mask", "C_VLM"], row_labels=CLASS_NAMES, path=tmp_path / "maps.png"
    )
    assert (tmp_path / "maps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(figure.axes) == 9
    with pytest.raises(ValueError, match="3 images and 2 map entries"):
        plot_interaction_maps(dataset["image"], maps[:2])


def test_detection_map_function_over_coco_style_rows(teacher):
    from datasets import Dataset, Features, Image, Sequence, Value

    model, processor = teacher
    extractor = InteractionExtractor(model, processor, prompt="detection_fg_bg", max_new_tokens=4)
    images = make_image_dataset(2)["image"]
    features = Features(
        {
            "image": Image(),
            "objects": {"bbox": Sequence(Sequence(Value("float32"), length=4)), "category": Sequence(Value("int64"))},
        }
    )
    dataset = Dataset.from_dict(
        {
            "image": images,
            "objects": [{"bbox": [[1, 1, 8, 8], [4, 4, 10, 10]], "category": [0, 1]}, {"bbox": [], "category": []}],
        },
        features=features,
    )
    mapped = dataset.map(interaction_map_fn(extractor, category_names=["dog", "cat"]), batched=True, batch_size=2)
    assert mapped["interaction_status"][1] == "no_targets" and not mapped["interaction_valid"][1]
    assert np.asarray(mapped["interaction_map"][1]).shape == np.asarray(mapped["interaction_map"][0]).shape == (4, 4)
    assert mapped["interaction_prompt"] == ["detection_fg_bg"] * 2
    with pytest.raises(ValueError, match="Unknown category id 5"):
        Dataset.from_dict(
            {"image": images[:1], "objects": [{"bbox": [[1, 1, 4, 4]], "category": [5]}]}, features=features
        ).map(interaction_map_fn(extractor, category_names=["dog", "cat"]), batched=True)


def test_precompute_refuses_bad_shard_size_and_empty_datasets(tmp_path):
    map_fn = MaskInteractionMapFn(grid=(4, 4))
    with pytest.raises(ValueError, match="shard_size must be >= 1, got 0"):
        precompute_interactions(make_image_dataset(3), map_fn, tmp_path, shard_size=0)
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        precompute_interactions(make_image_dataset(3), map_fn, tmp_path, batch_size=0)
    with pytest.raises(ValueError, match="has no rows"):
        precompute_interactions(make_image_dataset(3).select([]), map_fn, tmp_path)
