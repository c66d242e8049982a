from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_llava import real_processor_llava, tiny_llava

from hf_lfi.interactions import InteractionExtractor, contrast_map, crop_interaction_map, draw_boxes, expand_to_square
from hf_lfi.interactions.teacher import AttentionRowRecorder, answer_row_attention, capture_attention


@pytest.fixture(scope="module")
def teacher():
    return tiny_llava()


def random_image(width, height, seed):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8))


def eager_rows(model, inputs, rows, columns, position_ids):
    """Reference: the full eager attention matrices (output_attentions=True), rows and image columns picked out:
    per layer (batch, heads, R, N)."""
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            out = model(**inputs, position_ids=position_ids, output_attentions=True)
    finally:
        model.set_attn_implementation("sdpa")
    picked = [torch.stack([a[i][:, rows[i]][:, :, columns[i]] for i in range(a.shape[0])]) for a in out.attentions]
    return picked, out.logits


def test_answer_row_attention_matches_a_dense_reference_for_each_mask_kind():
    torch.manual_seed(0)
    batch, heads, kv_heads, length, dim = 2, 4, 2, 9, 8
    query, key = torch.randn(batch, heads, length, dim), torch.randn(batch, kv_heads, length, dim)
    rows = torch.tensor([[3, 8], [5, 6]])
    columns = torch.tensor([[0, 1, 2], [2, 3, 4]])
    padding = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1, 1], [1] * 9], dtype=torch.bool)
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    allowed = causal[None, None] & padding[:, None, None, :]
    full_key = key.repeat_interleave(heads // kv_heads, dim=1)
    for mask in (None, allowed, torch.where(allowed, 0.0, torch.finfo(torch.float32).min)):
        expected_mask = causal[None, None].expand(batch, 1, -1, -1) if mask is None else allowed
        scores = (query @ full_key.transpose(-1, -2) * 0.3).masked_fill(~expected_mask, float("-inf"))
        dense = scores.softmax(-1)
        expected = torch.stack([dense[i][:, rows[i]][:, :, columns[i]] for i in range(batch)])
        torch.testing.assert_close(answer_row_attention(query, key, mask, rows, columns, 0.3), expected)


def test_captured_rows_equal_eager_output_attentions_with_left_padding_and_gqa(teacher):
    model, processor = teacher
    extractor = InteractionExtractor(model, processor, prompt="classification_object")
    assert model.config.text_config.num_key_value_heads < model.config.text_config.num_attention_heads
    images = [random_image(32, 32, 0), random_image(32, 32, 1)]
    inputs = extractor._inputs(images, ["What?", "What is the object in the picture, in one word or phrase?"])
    mask = inputs["attention_mask"]
    assert (mask[0] == 0).any() and mask[:, -1].all()  # row 0 is left padded
    position_ids = (mask.cumsum(-1) - 1).clamp_min(0)
    length = mask.shape[1]
    rows = torch.tensor([[length - 1, length - 3], [length - 2, length - 5]])
    columns = (inputs["input_ids"] == model.config.image_token_id).nonzero()[:, 1].view(2, -1)
    modules = {id(layer.self_attn): i for i, layer in enumerate(model.model.language_model.layers)}
    reference, eager_logits = eager_rows(model, inputs, rows, columns, position_ids)
    for reduction in ("mean", "max"):
        recorder = AttentionRowRecorder(modules, rows, columns, reduction)
        with torch.no_grad(), capture_attention(model), recorder.recording():
            logits = model(**inputs, position_ids=position_ids).logits
        assert sorted(recorder.maps) == [0, 1]
        for layer, expected in enumerate(reference):
            expected = expected.mean(1) if reduction == "mean" else expected.amax(1)
            torch.testing.assert_close(recorder.maps[layer], expected, atol=1e-6, rtol=0)
        # outputs stay SDPA's (compared where the tokens are real; padded rows attend to nothing)
        torch.testing.assert_close(logits[mask.bool()], eager_logits[mask.bool()], atol=1e-5, rtol=1e-4)
    assert (
        model.config.text_config._attn_implementation == model.config.vision_config._attn_implementation == "sdpa"
    )  # restored


def test_classification_map_is_eq_11_of_the_answer_words(teacher):
    """Foreground word split into several tokens, two background words, a non-square image."""
    model, processor = teacher
    extractor = InteractionExtractor(model, processor)
    image = random_image(40, 24, 2)
    answer = "{'foreground': {hippopotamus}, 'background': {sky, grass}}"
    assert len(processor.tokenizer.tokenize("hippopotamus")) > 1
    result = extractor([image], class_names=["owl", "hippopotamus"], answers=[answer])[0]
    assert result.status == "ok" and result.valid and result.foreground == ["hippopotamus"]
    assert result.background == ["sky", "grass"]

    # reference: eager attention of the same prompt + answer, tokens picked by hand
    square, box = expand_to_square(image, extractor._pad_colour)
    inputs = extractor._inputs([square], [extractor.prompt.format(["owl", "hippopotamus"])])
    answer_ids = processor.tokenizer(answer, add_special_tokens=False, return_offsets_mapping=True)
    full = {
        "input_ids": torch.cat([inputs["input_ids"], torch.tensor([answer_ids["input_ids"]])], 1),
        "attention_mask": torch.ones(1, inputs["input_ids"].shape[1] + len(answer_ids["input_ids"]), dtype=torch.long),
        "pixel_values": inputs["pixel_values"],
    }
    prompt_len = inputs["input_ids"].shape[1]
    spans = {w: (answer.index(w), answer.index(w) + len(w)) for w in ("hippopotamus", "sky", "grass")}
    tokens = {
        w: [t for t, (a, b) in enumerate(answer_ids["offset_mapping"]) if a < e and b > s]
        for w, (s, e) in spans.items()
    }
    columns = (full["input_ids"][0] == model.config.image_token_id).nonzero()[:, 0]
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            attentions = model(**full, output_attentions=True).attentions
    finally:
        model.set_attn_implementation("sdpa")
    per_token = torch.stack([a[0].mean(0) for a in attentions]).mean(0)[:, columns]  # layers, heads averaged
    word = {w: per_token[[prompt_len + t for t in ts]].mean(0) for w, ts in tokens.items()}
    fore, back = word["hippopotamus"], (word["sky"] + word["grass"]) / 2
    expected = (fore - back).clamp_min(0)
    expected = crop_interaction_map((expected / expected.sum()).view(4, 4), box, square.size)
    np.testing.assert_allclose(result.interaction_map.astype(np.float32), expected.numpy(), atol=2e-3)
    assert result.interaction_map.dtype == np.float16 and result.interaction_map.shape == (4, 4)


def test_classification_statuses(teacher):
    model, processor = teacher
    images = [random_image(32, 32, i) for i in range(5)]
    answers = [
        "{'foreground': {cat}, 'background': {sky}}",  # not one of the classes
        "{'foreground': {owl}}",  # empty background: C_fore alone
        "an owl",  # malformed
        "{'foreground': {}, 'background': {sky}}",
        "{'foreground': 'red', 'background': 'red'}",  # no contrast
    ]
    strict = InteractionExtractor(model, processor)(images, class_names=["owl", "red"], answers=answers)
    assert [r.status for r in strict] == [
        "foreground_not_in_classes",
        "no_background",
        "malformed_answer",
        "no_foreground",
        "foreground_in_background",
    ]
    assert [r.valid for r in strict] == [False, True, False, False, False]
    assert strict[1].interaction_map.astype(np.float32).sum() == pytest.approx(1.0, abs=1e-2)
    assert strict[2].interaction_map.sum() == 0 and strict[4].interaction_map.sum() == 0
    lenient = InteractionExtractor(model, processor, accept_unlisted_foreground=True)(images[:1], ["owl"], answers[:1])
    assert lenient[0].valid and lenient[0].interaction_map.astype(np.float32).sum() == pytest.approx(1.0, abs=1e-2)


def test_generation_path_runs_batched(teacher):
    model, processor = teacher
    extractor = InteractionExtractor(model, processor, max_new_tokens=6)
    results = extractor([random_image(32, 32, 0), random_image(20, 30, 1)], class_names=["owl", "red"])
    assert len(results) == 2 and all(isinstance(r.answer, str) and r.answer for r in results)
    assert all(
        r.status in ("malformed_answer", "ok", "no_background", "no_foreground", "foreground_not_in_classes")
        for r in results
    )


def test_detection_map_is_eq_12(teacher):
    model, processor = teacher
    extractor = InteractionExtractor(model, processor, prompt="detection_fg_bg")
    image = random_image(32, 32, 3)
    answers = [
        [
            "Yes, there is a cat in the image, and the background is grass.",
            "Yes, there are dogs in the image, and the background is sky.",
        ]
    ]
    result = extractor.detect([image], [[[1, 1, 10, 10], [5, 5, 20, 20]]], [["dog", "cat"]], answers=answers)[0]
    assert result.status == "ok" and result.valid and result.foreground == ["cat", "dogs"]

    # reference from the same extractor's per-question attention: relu(C_cat + C_dogs - mean(C_grass, C_sky)) / L1
    prompted = [draw_boxes(image, [[5, 5, 20, 20]]), draw_boxes(image, [[1, 1, 10, 10]])]
    inputs = extractor._inputs(prompted, [extractor.prompt.format(target=t) for t in ("cat", "dog")])
    flat = answers[0]
    spans = [
        [(a.index(w), a.index(w) + len(w)) for w in words]
        for a, words in zip(flat, (("cat", "grass"), ("dogs", "sky")))
    ]
    rows = extractor.answer_attention(inputs, flat, spans)
    expected = contrast_map([rows[0][0], rows[1][0]], (rows[0][1] + rows[1][1]) / 2).view(4, 4)
    np.testing.assert_allclose(result.interaction_map.astype(np.float32), expected.numpy(), atol=2e-3)

    absent = extractor.detect([image], [[[1, 1, 10, 10]]], [["dog"]], answers=[["No, there is no dog."]])[0]
    assert absent.status == "object_absent" and not absent.valid
    with pytest.raises(ValueError, match="lies outside the 32x32 image"):
        extractor.detect([image], [[[20, 20, 30, 5]]], [["dog"]], answers=[["No."]])
    with pytest.raises(ValueError, match="has 1 boxes but 2 categories"):
        extractor.detect([image], [[[1, 1, 5, 5]]], [["dog", "cat"]])
    with pytest.raises(ValueError, match="Image 0's categories must be names .* got \\[3\\]"):  # asked "is there 3?"
        extractor.detect([image], [[[1, 1, 5, 5]]], [[3]])


def test_a_failed_detection_question_marks_its_row(teacher):
    """Eq. 12 sums over every target: a question whose answer fails leaves its object out, so the row is marked with
    that status and gets no map; a target the teacher says is absent adds nothing and the row stays valid."""
    model, processor = teacher
    extractor = InteractionExtractor(model, processor, prompt="detection_fg_bg")
    images = [random_image(32, 32, 3), random_image(32, 32, 4)]
    boxes = [[[1, 1, 10, 10], [5, 5, 20, 20]]] * 2
    answers = [
        ["Yes, there is a cat in the image, and the background is grass.", "I cannot tell."],
        ["Yes, there is a cat in the image, and the background is grass.", "No, there is no dog."],
    ]
    failed, absent = extractor.detect(images, boxes, [["dog", "cat"]] * 2, answers=answers)
    assert (failed.status, failed.valid, float(failed.interaction_map.sum())) == ("malformed_answer", False, 0.0)
    assert absent.status == "ok" and absent.valid and absent.foreground == ["cat"]


def test_every_foreground_word_is_kept(teacher):
    """{red, blue}: C_fore averages both words' attention; a listed word beside an unlisted one is not in the classes."""
    model, processor = teacher
    extractor = InteractionExtractor(model, processor)
    image = random_image(32, 32, 5)
    both, unlisted = extractor(
        [image, image],
        class_names=["red", "blue", "owl"],
        answers=[
            "{'foreground': {red, blue}, 'background': {sky}}",
            "{'foreground': {red, cat}, 'background': {sky}}",
        ],
    )
    assert both.status == "ok" and both.valid and both.foreground == ["red", "blue"]
    assert unlisted.status == "foreground_not_in_classes" and not unlisted.valid
    answer = "{'foreground': {red, blue}, 'background': {sky}}"
    squares, _ = extractor._square_images([image])
    inputs = extractor._inputs(squares, [extractor.prompt.format(["red", "blue", "owl"])])
    spans = [[(answer.index(w), answer.index(w) + len(w)) for w in ("red", "blue", "sky")]]
    red, blue, sky = extractor.answer_attention(inputs, [answer], spans)[0]
    expected = contrast_map([(red + blue) / 2], sky).view(4, 4)
    np.testing.assert_allclose(both.interaction_map.astype(np.float32), expected.numpy(), atol=2e-3)


def test_pad_colour_is_llavas_truncated_mean(teacher):
    model, processor = teacher
    assert tuple(processor.image_processor.image_mean) == (0.48145466, 0.4578275, 0.40821073)  # CLIP's mean
    assert InteractionExtractor(model, processor)._pad_colour == (122, 116, 104)  # int(255 * mean), not rounded


def test_extractor_argument_errors(teacher):
    model, processor = teacher
    with pytest.raises(ValueError, match="layers \\[7\\] do not exist"):
        InteractionExtractor(model, processor, layers=[7])
    with pytest.raises(ValueError, match="head_reduction"):
        InteractionExtractor(model, processor, head_reduction="median")
    with pytest.raises(ValueError, match="class_names must be a list of strings, got str"):
        InteractionExtractor(model, processor)(
            [random_image(32, 32, 0)], class_names="red", answers=["{'foreground': 'r'}"]
        )
    with pytest.raises(ValueError, match="use `detect"):
        InteractionExtractor(model, processor, prompt="detection_fg_bg")([random_image(32, 32, 0)])
    for settings in (dict(layers=[]), dict(layers=[0, 0])):  # [] failed at the first batch, [0, 0] counted twice
        with pytest.raises(ValueError, match="layers must name distinct text layers"):
            InteractionExtractor(model, processor, **settings)
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
        InteractionExtractor(model, processor, max_new_tokens=0)
    with pytest.raises(ValueError, match="No images: the extractor takes a non-empty list"):
        InteractionExtractor(model, processor)([], class_names=["red"])


def test_extractor_refuses_arrays_instead_of_pil_images(teacher):
    model, processor = teacher
    extractor = InteractionExtractor(model, processor)
    with pytest.raises(ValueError, match="takes a list of PIL images; image 0 is a ndarray.*PIL.Image.fromarray"):
        extractor([np.zeros((32, 32, 3), dtype=np.uint8)], class_names=["cat"])


LLAVA_PROCESSOR = Path(__file__).resolve().parents[2] / "shared" / "data" / "tokenizers" / "llava-1.5-processor"


@pytest.mark.skipif(not LLAVA_PROCESSOR.exists(), reason="needs ../shared/data/tokenizers/llava-1.5-processor")
def test_token_selection_with_the_real_llava_tokenizer():
    """The Llama-2 SentencePiece tokenizer of LLaVA-1.5: a real answer with trailing prose; the foreground phrase's
    tokens are exactly 'g old en ▁retr ie ver' (not the quote before it), the background's 'gr ass' (not the grass of
    the prose); the maps are the means of those tokens' rows of the eager attention."""
    pytest.importorskip("sentencepiece")
    model, processor = real_processor_llava(LLAVA_PROCESSOR)
    extractor = InteractionExtractor(model, processor)
    answers = [
        "{'foreground': 'golden retriever', 'background': 'grass'}. The dog is sitting on the grass.",
        "{'background': 'sky', 'foreground': 'owl'}",
    ]
    parsed = [extractor.prompt.parse(a) for a in answers]
    assert [(p.status, p.foreground, p.background) for p in parsed] == [
        ("ok", ["golden retriever"], ["grass"]),
        ("ok", ["owl"], ["sky"]),
    ]
    images = [random_image(60, 40, 0), random_image(30, 50, 1)]
    squares, _ = extractor._square_images(images)
    inputs = extractor._inputs(squares, [extractor.prompt.format(["golden retriever", "owl"])] * 2)
    assert int((inputs["input_ids"][0] == model.config.image_token_id).sum()) == 576  # 24 x 24
    spans = [p.foreground_spans + p.background_spans for p in parsed]
    captured = extractor.answer_attention(inputs, answers, spans)

    tokens = [processor.tokenizer.tokenize(a) for a in answers]
    fore = tokens[0].index("g")
    assert tokens[0][fore : fore + 6] == ["g", "old", "en", "▁retr", "ie", "ver"]
    back = tokens[0].index("gr")
    assert tokens[0][back : back + 2] == ["gr", "ass"] and tokens[0][back - 1] == "▁'"
    owl = tokens[1].index("ow")
    assert tokens[1][owl : owl + 2] == ["ow", "l"] and tokens[1][owl - 1] == "▁'"
    picked = {0: [list(range(fore, fore + 6)), [back, back + 1]], 1: [[owl, owl + 1], [tokens[1].index("sky")]]}

    ids = processor.tokenizer(answers, add_special_tokens=False)["input_ids"]
    length = max(map(len, ids))
    full = {
        "input_ids": torch.cat(
            [
                inputs["input_ids"],
                torch.tensor([i + [processor.tokenizer.pad_token_id] * (length - len(i)) for i in ids]),
            ],
            1,
        ),
        "attention_mask": torch.cat(
            [inputs["attention_mask"], torch.tensor([[1] * len(i) + [0] * (length - len(i)) for i in ids])], 1
        ),
        "pixel_values": inputs["pixel_values"],
    }
    position_ids = (full["attention_mask"].cumsum(-1) - 1).clamp_min(0)
    prompt_len = inputs["input_ids"].shape[1]
    columns = (inputs["input_ids"] == model.config.image_token_id).nonzero()[:, 1].view(2, -1)
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            attentions = model(**full, position_ids=position_ids, output_attentions=True).attentions
    finally:
        model.set_attn_implementation("sdpa")
    per_token = torch.stack([a.mean(1) for a in attentions]).mean(0)  # (batch, Q, K), heads and layers averaged
    for i in range(2):
        for group, rows in zip(picked[i], captured[i]):
            expected = per_token[i, [prompt_len + t for t in group]][:, columns[i]].mean(0)
            torch.testing.assert_close(rows, expected, atol=1e-6, rtol=0)
