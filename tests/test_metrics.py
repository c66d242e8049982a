import numpy as np
import pytest

from hf_lfi import metrics


@pytest.fixture(scope="module")
def accuracy():
    return metrics.load("accuracy_topk")


@pytest.fixture(scope="module")
def alignment():
    return metrics.load("interaction_alignment")


def test_accuracy_topk_matches_a_reference(accuracy):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 10))
    labels = rng.integers(0, 10, 50)
    result = accuracy.compute(predictions=logits, references=labels, top_k=[3, 5])
    order = np.argsort(-logits, axis=1)
    assert result["accuracy"] == pytest.approx(np.mean(order[:, 0] == labels))
    for k in (3, 5):
        assert result[f"top{k}_accuracy"] == pytest.approx(np.mean([labels[i] in order[i, :k] for i in range(50)]))


def test_accuracy_topk_hand_case_and_errors(accuracy):
    result = accuracy.compute(predictions=[[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]], references=[1, 2], top_k=2)
    assert result == {"accuracy": 0.5, "top2_accuracy": 0.5}
    with pytest.raises(ValueError, match="class ids in \\[0, 3\\)"):
        accuracy.compute(predictions=[[0.1, 0.7, 0.2]], references=[3])


def test_interaction_alignment_hand_computed(alignment):
    # mask covers the top-left cell; the map puts 0.6 there: cosine 0.6 / |(0.6, 0.4)|, top-1 cell is the mask cell
    one = alignment.compute(predictions=[[[0.6, 0.4], [0.0, 0.0]]], references=[[[255, 0], [0, 0]]])
    assert one["cosine_similarity"] == pytest.approx(0.6 / np.sqrt(0.52), rel=1e-5)
    assert one["iou_at_top_k"] == pytest.approx(1.0)
    # a 4x4 mask on the right half -> coverage [[0, 1], [0, 1]]; top-2 of the map = (1,1), (1,0): IoU 1/3
    mask = np.zeros((4, 4))
    mask[:, 2:] = 1
    two = alignment.compute(predictions=[[[0.1, 0.2], [0.3, 0.4]]], references=[mask])
    assert two["cosine_similarity"] == pytest.approx(0.6 / (np.sqrt(0.3) * np.sqrt(2)), rel=1e-5)
    assert two["iou_at_top_k"] == pytest.approx(1 / 3)
    both = alignment.compute(
        predictions=[[[0.6, 0.4], [0.0, 0.0]], [[0.1, 0.2], [0.3, 0.4]]], references=[[[255, 0], [0, 0]], mask]
    )
    assert both["iou_at_top_k"] == pytest.approx((1 + 1 / 3) / 2)
    fixed_k = alignment.compute(predictions=[[[0.1, 0.2], [0.3, 0.4]]], references=[mask], top_k=1)
    assert fixed_k["iou_at_top_k"] == pytest.approx(1 / 2)


def test_interaction_alignment_refuses_bad_maps(alignment):
    with pytest.raises(ValueError, match="finite and non-negative"):
        alignment.compute(predictions=[[[-0.1, 1.0], [0.0, 0.0]]], references=[[[1, 0], [0, 0]]])
    good_map, good_mask = [[0.6, 0.4], [0.0, 0.0]], [[255, 0], [0, 0]]
    for top_k in (0, -1, 1.5):  # 0 gave an IoU of 0 for every map
        with pytest.raises(ValueError, match="top_k must be a whole number of cells >= 1"):
            alignment.compute(predictions=[good_map], references=[good_mask], top_k=top_k)
    with pytest.raises(ValueError, match="Prediction 0 is all zero: no map to score"):
        alignment.compute(predictions=[[[0.0, 0.0], [0.0, 0.0]]], references=[good_mask])
    with pytest.raises(ValueError, match="Reference 0 has no foreground pixel"):
        alignment.compute(predictions=[good_map], references=[[[0, 0], [0, 0]]])


def test_interaction_alignment_accepts_rgb_masks(alignment):
    """An RGB(A) mask (foreground in any channel), as documented, scores as its one-channel version."""
    mask = np.zeros((4, 4))
    mask[:, 2:] = 255
    prediction = [[0.1, 0.2], [0.3, 0.4]]
    rgb = np.repeat(mask[..., None], 3, axis=-1)
    rgb[:, 2:, 1:] = 0  # red only
    plain = alignment.compute(predictions=[prediction], references=[mask])
    assert alignment.compute(predictions=[prediction], references=[rgb]) == plain


def test_unknown_metric_name():
    with pytest.raises(ValueError, match="Unknown hf_lfi metric 'mAP'"):
        metrics.load("mAP")


def test_coco_map_hand_checked_cases():
    coco = metrics.load("coco_map")
    references = [
        {"boxes": [[10, 10, 40, 50], [60, 20, 40, 35]], "labels": [1, 1]},
        {"boxes": [[5, 5, 100, 80]], "labels": [2]},
    ]
    perfect = [
        {"boxes": [[10, 10, 50, 60], [60, 20, 100, 55]], "scores": [0.9, 0.8], "labels": [1, 1]},
        {"boxes": [[5, 5, 105, 85]], "scores": [0.7], "labels": [2]},
    ]
    result = coco.compute(predictions=perfect, references=references)
    assert result["map"] == pytest.approx(1.0) and result["map_50"] == pytest.approx(1.0)
    assert result["map_small"] == -1.0  # no object under 32^2 px
    # one of the two class-1 boxes missed: class 1 reaches recall 0.5 at precision 1 -> 51 of 101 recall points
    missed = [perfect[0] | {"boxes": [[10, 10, 50, 60]], "scores": [0.9], "labels": [1]}, perfect[1]]
    result = coco.compute(predictions=missed, references=references)
    assert result["map"] == pytest.approx((51 / 101 + 1.0) / 2)
    with pytest.raises(ValueError, match="non-positive width or height"):
        coco.compute(predictions=perfect[:1], references=[{"boxes": [[10, 10, 0, 50]], "labels": [1]}])


def test_accuracy_topk_ties_and_nan_are_misses(accuracy):
    constant = accuracy.compute(predictions=[[0.0] * 6] * 4, references=[0, 1, 2, 3], top_k=5)
    assert constant == {"accuracy": 0.0, "top5_accuracy": 0.0}
    nan = accuracy.compute(predictions=[[float("nan")] * 6, [0.0, 1.0, 0, 0, 0, 0]], references=[0, 1], top_k=5)
    assert nan == {"accuracy": 0.5, "top5_accuracy": 0.5}
    # a tie with one other class: the reference is 2nd, a top-2 hit but no top-1 hit
    tie = accuracy.compute(predictions=[[1.0, 1.0, 0.0]], references=[1], top_k=2)
    assert tie == {"accuracy": 0.0, "top2_accuracy": 1.0}


def test_accuracy_topk_refuses_float_references_and_k_above_the_classes(accuracy):
    with pytest.raises(ValueError, match="integral class ids, got \\[1.7\\]"):
        accuracy.compute(predictions=[[0.1, 0.7, 0.2]], references=[1.7])
    assert accuracy.compute(predictions=[[0.1, 0.7, 0.2]], references=[1.0], top_k=1)["accuracy"] == 1.0
    with pytest.raises(ValueError, match="top_k must be in \\[1, 3\\]"):
        accuracy.compute(predictions=[[0.1, 0.7, 0.2]], references=[0], top_k=5)


def test_interaction_alignment_refuses_empty_input(alignment):
    with pytest.raises(ValueError, match="No predictions to score"):
        alignment.compute(predictions=[], references=[])


def test_coco_map_refuses_boxes_without_scores_and_nan_scores():
    coco = metrics.load("coco_map")
    references = [{"boxes": [[10, 10, 40, 50]], "labels": [1]}]
    unscored = [{"boxes": [[10, 10, 50, 60], [0, 0, 5, 5]], "scores": [0.9], "labels": [1, 1]}]
    with pytest.raises(ValueError, match="Prediction 0 has 2 boxes, 1 scores and 2 labels"):
        coco.compute(predictions=unscored, references=references)
    nan = [{"boxes": [[10, 10, 50, 60]], "scores": [float("nan")], "labels": [1]}]
    with pytest.raises(ValueError, match="Prediction 0 has NaN"):
        coco.compute(predictions=nan, references=references)
    corners = [{"boxes": [[10, 10, 5, 60]], "scores": [0.9], "labels": [1]}]  # gave mAP 0 without a word
    with pytest.raises(ValueError, match="Prediction 0 has a box whose x1 < x0 .* absolute corners"):
        coco.compute(predictions=corners, references=references)
    with pytest.raises(ValueError, match="Reference 0 has NaN or infinite box coordinates"):
        coco.compute(
            predictions=[{"boxes": [], "scores": [], "labels": []}],
            references=[{"boxes": [[10, float("nan"), 40, 50]], "labels": [1]}],
        )
