import numpy as np
import pytest
from datasets import DatasetDict
from synthetic import make_image_dataset, write_parquet_splits

from hf_lfi.modeling.name_or_path import NameOrPathError
from hf_lfi.training import check_interaction_column, check_labels, load_image_dataset, subsample


def test_load_image_dataset_from_local_folders(tmp_path):
    parquet = load_image_dataset(str(write_parquet_splits(tmp_path / "parquet", {"train": 6, "validation": 3})))
    assert {split: len(ds) for split, ds in parquet.items()} == {"train": 6, "validation": 3}
    assert parquet["train"].features["label"].names == ["red", "green", "blue"]

    sharded = tmp_path / "sharded"
    sharded.mkdir()
    for i in range(2):
        make_image_dataset(4, seed=i).to_parquet(str(sharded / f"train-0000{i}-of-00002.parquet"))
    assert len(load_image_dataset(str(sharded))["train"]) == 8

    DatasetDict({"train": make_image_dataset(5)}).save_to_disk(str(tmp_path / "disk"))
    assert len(load_image_dataset(str(tmp_path / "disk"))["train"]) == 5
    make_image_dataset(4).save_to_disk(str(tmp_path / "single"))
    assert list(load_image_dataset(str(tmp_path / "single"))) == ["train"]

    for i, image in enumerate(make_image_dataset(4)["image"]):
        (tmp_path / "folder" / ("cat" if i % 2 else "dog")).mkdir(parents=True, exist_ok=True)
        image.save(tmp_path / "folder" / ("cat" if i % 2 else "dog") / f"{i}.png")
    folder = load_image_dataset(str(tmp_path / "folder"))
    assert folder["train"].features["label"].names == ["cat", "dog"] and len(folder["train"]) == 4

    with pytest.raises(NameOrPathError, match="No folder at"):
        load_image_dataset(str(tmp_path / "missing" / "data"))


def test_subsample_is_seeded_and_sized():
    dataset = make_image_dataset(20)
    half = subsample(dataset, 0.5, seed=1)
    assert len(half) == 10 and half["label"] == subsample(dataset, 0.5, seed=1)["label"]
    assert len(subsample(dataset, 0.01, seed=1)) == 1 and subsample(dataset, 1.0, seed=1) is dataset
    with pytest.raises(ValueError, match="data_ratio must be in"):
        subsample(dataset, 0.0, seed=1)


def test_check_labels():
    dataset = make_image_dataset(6)
    check_labels(dataset, "label", 3)
    with pytest.raises(ValueError, match="Labels out of range: \\[2\\]"):
        check_labels(dataset, "label", 2)
    unlabelled = dataset.map(lambda row: {"label": -1})  # datasets marks missing labels with -1
    with pytest.raises(ValueError, match="Labels out of range: \\[-1\\]"):
        check_labels(unlabelled, "label", 3)
    with pytest.raises(ValueError, match="no label column 'fine_label'"):
        check_labels(dataset, "fine_label", 3)


def _with_maps(maps, valid=None):
    dataset = make_image_dataset(len(maps)).add_column("interaction_map", [np.asarray(m).tolist() for m in maps])
    return dataset if valid is None else dataset.add_column("interaction_valid", valid)


def test_check_interaction_column_returns_the_grid_and_names_each_problem():
    good = np.full((3, 4, 6), 1 / 24)
    assert check_interaction_column(_with_maps(good), "interaction_map", "interaction_valid") == (4, 6)
    with pytest.raises(ValueError, match="no interaction map column 'interaction_map'"):
        check_interaction_column(make_image_dataset(3), "interaction_map", "interaction_valid")
    with pytest.raises(ValueError, match="must be 2-d"):
        check_interaction_column(_with_maps(np.full((3, 24), 1 / 24)), "interaction_map", "interaction_valid")
    nan = good.copy()
    nan[1, 0, 0] = np.nan
    with pytest.raises(ValueError, match="row 1 has NaN"):
        check_interaction_column(_with_maps(nan), "interaction_map", "interaction_valid")
    negative = good.copy()
    negative[2, 1, 1] = -0.5
    with pytest.raises(ValueError, match="row 2 has negative values"):
        check_interaction_column(_with_maps(negative), "interaction_map", "interaction_valid")
    ragged = [np.full((4, 6), 1 / 24), np.full((5, 6), 1 / 30)]
    message = "differ in shape: row 1 has shape \\(5, 6\\), the rows before it \\(4, 6\\)"
    with pytest.raises(ValueError, match=message):
        check_interaction_column(_with_maps(ragged), "interaction_map", "interaction_valid")
    with pytest.raises(ValueError, match=message):
        check_interaction_column(_with_maps(ragged), "interaction_map", "interaction_valid", batch_size=1)
    missing = make_image_dataset(3).add_column("interaction_map", [good[0].tolist(), None, good[2].tolist()])
    with pytest.raises(ValueError, match="Rows \\[1\\] have no interaction map \\('interaction_map' is None\\)"):
        check_interaction_column(missing, "interaction_map", "interaction_valid")
    empty = good.copy()
    empty[0] = 0
    check_interaction_column(_with_maps(empty, [False, True, True]), "interaction_map", "interaction_valid")
    with pytest.raises(ValueError, match="Row 0 is marked interaction_valid=True but its map is all zero"):
        check_interaction_column(_with_maps(empty, [True, True, True]), "interaction_map", "interaction_valid")


def test_teacher_maps_that_are_all_unusable_are_refused_and_few_usable_warn(caplog):
    good = np.full((4, 4, 6), 1 / 24)
    with pytest.raises(ValueError, match="None of the 4 teacher maps .* is usable"):
        check_interaction_column(_with_maps(np.zeros((4, 4, 6))), "interaction_map", "interaction_valid")
    with pytest.raises(ValueError, match="None of the 4 teacher maps"):
        check_interaction_column(_with_maps(good, [False] * 4), "interaction_map", "interaction_valid")
    with caplog.at_level("WARNING", logger="hf_lfi.training.data"):
        check_interaction_column(_with_maps(good, [True, False, False, False]), "interaction_map", "interaction_valid")
    assert "Only 1 of 4 training rows (25 %) have a usable teacher map" in caplog.text


def test_a_saved_dataset_without_rows_loads_for_the_checks_to_name(tmp_path):
    """`datasets` cannot load back a saved 0-row dataset (an IndexError); it loads empty, with its features."""
    empty = make_image_dataset(2).select([])
    empty.save_to_disk(str(tmp_path / "one"))
    DatasetDict({"train": make_image_dataset(2), "validation": empty}).save_to_disk(str(tmp_path / "two"))
    one = load_image_dataset(str(tmp_path / "one"))
    assert len(one["train"]) == 0 and one["train"].features == empty.features
    two = load_image_dataset(str(tmp_path / "two"))
    assert (len(two["train"]), len(two["validation"])) == (2, 0)
    with pytest.raises(ValueError, match="The training dataset is empty"):
        check_interaction_column(
            one["train"].add_column("interaction_map", []), "interaction_map", "interaction_valid"
        )
