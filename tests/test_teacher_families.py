"""Every supported VLM family: the answer rows the extractor records while generating (and those of its
teacher-forced forward pass) equal the eager attention `generate()` itself computes for the same answer tokens (KV
cache, its own positions and masks), batch of two images of different sizes; and maps end to end on the family's
grid."""

from contextlib import contextmanager

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_vlms import FAMILIES, family_tokenizer, forced_answers, tiny_vlm

from hf_lfi.interactions import InteractionExtractor
from hf_lfi.interactions.layouts import image_token_layout
from hf_lfi.interactions.teacher import token_spans

CLASSES = ["owl", "red"]
ANSWERS = ["{'foreground': 'owl', 'background': 'sky'}", "{'foreground': {red}, 'background': {grass, sky}} The end."]


def random_image(width, height, seed):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8))


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request):
    return request.param, *tiny_vlm(request.param)


def prompt_inputs(extractor, images, class_lists=None):
    squares, _ = extractor._square_images(images)
    return extractor._inputs(squares, [extractor.prompt.format(c) for c in class_lists or [CLASSES] * len(images)])


@contextmanager
def text_attention(model, implementation):
    """Within the block, the text model (only) runs `implementation` (None: its own): the vision tower keeps its own
    attention, as in the capture."""
    text = next(
        name for name in model.config.sub_configs if getattr(model.config, name) is model.config.get_text_config()
    )
    previous = getattr(model.config, text)._attn_implementation
    model.set_attn_implementation({text: implementation or previous})
    try:
        yield
    finally:
        model.set_attn_implementation({text: previous})


def eager_generate_rows(model, processor, inputs, answers):
    """Eager `generate()` forced to emit `answers`: per decode step t + 1 (feeding answer token t), per layer, the
    (batch, heads, 1, K) attention over the whole prefix."""
    with torch.no_grad(), text_attention(model, "eager"), forced_answers(model, processor.tokenizer, answers) as ids:
        out = model.generate(
            **inputs,
            max_new_tokens=max(map(len, ids)) + 1,
            do_sample=False,
            output_attentions=True,
            return_dict_in_generate=True,
        )
    prompt_length = inputs["input_ids"].shape[1]
    for i, row in enumerate(ids):
        assert out.sequences[i, prompt_length : prompt_length + len(row)].tolist() == row  # the forced answer
    return ids, out.attentions


@pytest.fixture(scope="module")
def reference(family):
    """The prompts of two images of different sizes and class lists (one of them left padded), and the eager
    reference of `ANSWERS`."""
    name, model, processor = family
    probe = InteractionExtractor(model, processor)
    images = [random_image(32, 32, 0), random_image(56, 24, 1)]
    inputs = prompt_inputs(probe, images, [CLASSES, [*CLASSES, "hippopotamus", "green grass"]])
    assert (inputs["attention_mask"][:, 0] == 0).any() and inputs["attention_mask"][:, -1].all()
    return inputs, probe.layout.grids(inputs), *eager_generate_rows(model, processor, inputs, ANSWERS)


def reduce_heads(rows, reduction):
    return rows.mean(0) if reduction == "mean" else rows.amax(0)


@pytest.mark.parametrize("implementation", ["eager", None])
def test_rows_recorded_while_generating(family, reference, implementation):
    """Every answer token's row, the last one included: generation stops at the longest answer's last token, which
    is never fed back, so the extractor reads it with one more decode step. Per layer and head reduction, the rows of
    an eager teacher equal eager `generate`'s attention; with the teacher's own attention (SDPA but for Gemma-2), they
    equal the teacher-forced forward pass's."""
    name, model, processor = family
    inputs, grids, ids, attentions = reference
    for reduction in ("mean", "max"):
        extractor = InteractionExtractor(model, processor, head_reduction=reduction, max_new_tokens=max(map(len, ids)))
        with text_attention(model, implementation):
            with forced_answers(model, processor.tokenizer, ANSWERS):
                generated = extractor.generate_answers(inputs)
            every_token = [[span for span in spans if span[1] > span[0]] for spans in generated.token_spans]
            captured = extractor.generated_attention(inputs, generated, every_token)
            forced = extractor.answer_attention(inputs, ANSWERS, every_token)  # layers averaged
        assert generated.answers == ANSWERS
        for generated_rows, forced_rows in zip(captured, forced):
            torch.testing.assert_close(torch.stack(generated_rows), torch.stack(forced_rows), atol=1e-6, rtol=0)
        rows = generated.recorder.rows()  # per layer (batch, fed tokens, N)
        assert min(r.shape[1] for r in rows.values()) == max(map(len, ids))  # the last token was fed once more
        for layer in extractor.layers if implementation == "eager" else ():
            for i, row in enumerate(ids):
                n = len(grids[i].positions)
                for t in range(len(row)):
                    expected = reduce_heads(attentions[t + 1][layer][i, :, -1, grids[i].positions], reduction)
                    torch.testing.assert_close(rows[layer][i, t, :n], expected.float(), atol=1e-6, rtol=0)


def test_teacher_forced_rows_equal_the_eager_attention_of_generate(family, reference):
    """Today's forward pass over prompt + answer with the teacher's own attention (SDPA but for Gemma-2)."""
    name, model, processor = family
    inputs, grids, ids, attentions = reference
    offsets = processor.tokenizer(ANSWERS, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    for layer in (0, model.config.get_text_config().num_hidden_layers - 1):
        extractor = InteractionExtractor(model, processor, layers=[layer], head_reduction="max")
        captured = extractor.answer_attention(inputs, ANSWERS, [list(map(tuple, o)) for o in offsets])
        for i, row in enumerate(ids):
            for t in range(len(row)):
                expected = attentions[t + 1][layer][i, :, -1, grids[i].positions].amax(0)
                torch.testing.assert_close(captured[i][t], expected.float(), atol=1e-6, rtol=0)


def test_maps_end_to_end_on_the_family_grid(family):
    name, model, processor = family
    images = [random_image(32, 32, 2), random_image(56, 24, 3)]
    extractor = InteractionExtractor(model, processor, max_new_tokens=32)
    forced = extractor(images, class_names=CLASSES, answers=ANSWERS)
    with forced_answers(model, processor.tokenizer, ANSWERS):
        generated = extractor(images, class_names=CLASSES)
    grids = extractor.layout.grids(prompt_inputs(extractor, images))
    assert [r.status for r in forced] == [r.status for r in generated] == ["ok", "ok"]
    assert forced[1].background == generated[1].background == ["grass", "sky"]
    for a, b, grid in zip(forced, generated, grids):
        assert a.interaction_map.shape == (grid.rows, grid.cols) and a.interaction_map.dtype == np.float16
        assert a.interaction_map.astype(np.float32).sum() == pytest.approx(1.0, abs=2e-3)
        np.testing.assert_allclose(
            a.interaction_map.astype(np.float32), b.interaction_map.astype(np.float32), atol=1e-3
        )
    free = extractor(images, class_names=CLASSES)  # the model's own (random) answers, batched, left padded
    assert [r.interaction_map.shape for r in free] == [(g.rows, g.cols) for g in grids]


@pytest.mark.parametrize("window", ["inside_the_prompt", "inside_the_answer"])
def test_sliding_window_layers_whose_cache_drops_keys(window):
    """Gemma 3's sliding layers keep the last `window` keys. A window ending inside the prompt's image tokens: every
    step reads its own window, from which image tokens fall out one by one. A window ending inside the answer: the
    first steps are computed before their keys leave the cache."""
    model, processor = tiny_vlm("gemma3")
    extractor = InteractionExtractor(model, processor, layers=[0], max_new_tokens=32)
    inputs = prompt_inputs(extractor, [random_image(32, 32, 0), random_image(56, 24, 1)])
    prompt_length = inputs["input_ids"].shape[1]
    grids = extractor.layout.grids(inputs)
    middle = int(grids[0].positions[len(grids[0].positions) // 2])
    size = prompt_length - middle if window == "inside_the_prompt" else prompt_length + 8
    model.config.text_config.sliding_window = size
    assert model.model.language_model.layers[0].self_attn.sliding_window is not None  # layer 0 slides
    for layer in model.model.language_model.layers:
        if layer.self_attn.sliding_window is not None:
            layer.self_attn.sliding_window = size
    ids, attentions = eager_generate_rows(model, processor, inputs, ANSWERS)
    with forced_answers(model, processor.tokenizer, ANSWERS):
        generated = extractor.generate_answers(inputs)
    rows = generated.recorder.rows()[0]
    for i, row in enumerate(ids):
        for t in range(len(row)):
            eager = attentions[t + 1][0][i, :, -1]  # the eager cache too keeps only the window
            columns = grids[i].positions - (prompt_length + t + 1 - eager.shape[-1])
            expected = torch.where(columns >= 0, eager[:, columns.clamp_min(0)], 0.0).mean(0)
            torch.testing.assert_close(rows[i, t, : len(columns)], expected.float(), atol=1e-6, rtol=0)
    first, last = (rows[0, t, : len(grids[0].positions)] for t in (0, len(ids[0]) - 1))
    assert (first > 0).sum() > (last > 0).sum()  # image tokens left the window while the answer grew


def test_softcapped_attention_is_captured_with_its_softcap():
    """PaliGemma-2 (Gemma-2 text) with queries scaled up so that the softcap bites: the rows recorded while
    generating equal eager `generate`'s, and differ from the rows of the same model without the softcap."""
    model, processor = tiny_vlm("paligemma2")
    with torch.no_grad():
        for layer in model.model.language_model.layers:
            layer.self_attn.q_proj.weight *= 100
    extractor = InteractionExtractor(model, processor, max_new_tokens=32)
    inputs = prompt_inputs(extractor, [random_image(32, 32, 0), random_image(56, 24, 1)])
    grids = extractor.layout.grids(inputs)
    ids, attentions = eager_generate_rows(model, processor, inputs, ANSWERS)
    with forced_answers(model, processor.tokenizer, ANSWERS):
        generated = extractor.generate_answers(inputs)
    capped = generated.recorder.rows()
    for layer, rows in capped.items():
        for i, row in enumerate(ids):
            for t in range(len(row)):
                expected = attentions[t + 1][layer][i, :, -1, grids[i].positions].mean(0)
                torch.testing.assert_close(rows[i, t, : len(grids[i].positions)], expected, atol=1e-6, rtol=0)
    for layer in model.model.language_model.layers:
        layer.self_attn.attn_logit_softcapping = None
    with forced_answers(model, processor.tokenizer, ANSWERS):
        uncapped = extractor.generate_answers(inputs).recorder.rows()
    assert (capped[0] - uncapped[0]).abs().max() > 1e-2


def test_token_spans_of_generated_ids():
    """Spans from decoding growing prefixes: the answer as batch_decode gives it (stripped), special tokens and
    padding spanning nothing."""
    tokenizer = family_tokenizer([])
    answer = "{'foreground': {owl}, 'background': {sky}}"
    encoded = tokenizer(" " + answer, add_special_tokens=False, return_offsets_mapping=True)
    ids = [*encoded["input_ids"], tokenizer.eos_token_id, tokenizer.pad_token_id]
    text, spans = token_spans(tokenizer, ids)
    assert text == answer
    assert spans == [(max(a - 1, 0), b - 1) for a, b in encoded["offset_mapping"]] + [(len(answer), len(answer))] * 2


def test_non_square_qwen_grids_reach_the_dataset_card_and_the_alignment_loss(tmp_path):
    from datasets import Dataset

    import hf_lfi
    from hf_lfi.interactions import interaction_map_fn
    from hf_lfi.training.alignment import alignment_loss, resample_teacher_map

    model, processor = tiny_vlm("qwen2_vl")
    extractor = InteractionExtractor(model, processor)
    dataset = Dataset.from_dict({"image": [random_image(64, 24, 0), random_image(64, 24, 1)], "answer": ANSWERS})
    map_fn = interaction_map_fn(extractor, class_names=CLASSES, answer_column="answer")
    mapped = dataset.map(map_fn, batched=True, features=map_fn.output_features(dataset.features))
    maps = torch.tensor(np.asarray(mapped["interaction_map"], dtype=np.float32))
    rows, cols = maps.shape[1:]
    assert cols > rows  # a wide image, a wide grid: the map keeps it
    card = hf_lfi.save_interaction_dataset(mapped, tmp_path / "qwen-maps")
    assert card.data.hf_lfi["grid"] == f"{rows} x {cols}" and f"{rows} x {cols}" in str(card)
    student = [torch.full((2, 4, 4), 1 / 16)]
    loss = alignment_loss(student, maps)
    expected = alignment_loss(student, resample_teacher_map(maps, (4, 4)))
    assert torch.isfinite(loss) and loss > 0
    torch.testing.assert_close(loss, expected)


def test_unknown_families_are_named():
    fake = torch.nn.Module()
    fake.config = type("Config", (), {"model_type": "mllama"})()
    with pytest.raises(ValueError, match="No image-token layout for VLM family 'mllama'; supported: \\['gemma3'"):
        image_token_layout(fake)
    assert family_tokenizer([]).pad_token == "<pad>"
