"""Every supported VLM family: the captured answer rows equal the eager attention `generate()` itself computes for
the same answer tokens (KV cache, its own positions and masks), batch of two images of different sizes; and maps
end to end on the family's grid."""

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_vlms import FAMILIES, family_tokenizer, tiny_vlm
from transformers import LogitsProcessor

from hf_lfi.interactions import InteractionExtractor, contrast_map
from hf_lfi.interactions.layouts import image_token_layout

CLASSES = ["owl", "red"]
ANSWERS = ["{'foreground': 'owl', 'background': 'sky'}", "{'foreground': {red}, 'background': {grass, sky}} The end."]


def random_image(width, height, seed):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8))


class ForceTokens(LogitsProcessor):
    """Greedy generation that emits `rows[i]` for batch row i, then EOS: teacher forcing through `generate()`."""

    def __init__(self, rows: list[list[int]], prompt_len: int, eos_token_id: int):
        self.rows, self.prompt_len, self.eos = rows, prompt_len, eos_token_id

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1] - self.prompt_len
        forced = torch.tensor([row[step] if step < len(row) else self.eos for row in self.rows])
        return (
            torch.full_like(scores, float("-inf"))
            .index_fill_(1, torch.tensor([0]), float("-inf"))
            .scatter_(1, forced[:, None].to(scores.device), 0.0)
        )


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request):
    return request.param, *tiny_vlm(request.param)


def generate_time_rows(model, processor, inputs, answers):
    """Eager `generate()` forced to emit `answers`: per layer (batch, heads, T, K) attention of answer token t (fed
    to the model at step t + 1) over the whole prefix."""
    ids = processor.tokenizer(list(answers), add_special_tokens=False)["input_ids"]
    prompt_len = inputs["input_ids"].shape[1]
    eos = processor.tokenizer.eos_token_id
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            out = model.generate(
                **inputs,
                logits_processor=[ForceTokens(ids, prompt_len, eos)],
                max_new_tokens=max(map(len, ids)) + 1,
                do_sample=False,
                output_attentions=True,
                return_dict_in_generate=True,
                eos_token_id=eos,
            )
    finally:
        model.set_attn_implementation("sdpa")
    for i, row in enumerate(ids):
        assert out.sequences[i, prompt_len : prompt_len + len(row)].tolist() == row  # the forced answer was generated
    return ids, out.attentions


def test_captured_rows_equal_the_attention_generate_computes(family):
    name, model, processor = family
    images = [random_image(32, 32, 0), random_image(56, 24, 1)]  # different sizes (and token counts for anyres/Qwen)
    probe = InteractionExtractor(model, processor)
    squares, _ = probe._square_images(images)
    inputs = probe._inputs(squares, [probe.prompt.format(CLASSES)] * 2)
    assert (inputs["attention_mask"][:, 0] == 0).any() or name in ("llava", "paligemma", "gemma3")  # left padding
    ids, attentions = generate_time_rows(model, processor, inputs, ANSWERS)
    offsets = processor.tokenizer(ANSWERS, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    grids = probe.layout.grids(inputs)
    assert len(grids) == 2
    for layer in range(model.config.get_text_config().num_hidden_layers):
        for reduction in ("mean", "max"):
            extractor = InteractionExtractor(model, processor, layers=[layer], head_reduction=reduction)
            captured = extractor.answer_attention(inputs, ANSWERS, [list(map(tuple, o)) for o in offsets])
            for i, row in enumerate(ids):
                for t in range(len(row)):
                    expected = attentions[t + 1][layer][i, :, -1, grids[i].positions]  # heads x cells
                    expected = expected.mean(0) if reduction == "mean" else expected.amax(0)
                    torch.testing.assert_close(captured[i][t], expected.float(), atol=1e-6, rtol=0)


def test_maps_end_to_end_on_the_family_grid(family):
    name, model, processor = family
    images = [random_image(32, 32, 2), random_image(56, 24, 3)]
    extractor = InteractionExtractor(model, processor, max_new_tokens=4)
    results = extractor(images, class_names=CLASSES, answers=ANSWERS)
    squares, _ = extractor._square_images(images)
    grids = extractor.layout.grids(extractor._inputs(squares, [extractor.prompt.format(CLASSES)] * 2))
    assert [r.status for r in results] == ["ok", "ok"] and results[1].background == ["grass", "sky"]
    for result, grid in zip(results, grids):
        assert result.interaction_map.shape == (grid.rows, grid.cols) and result.interaction_map.dtype == np.float16
        assert result.interaction_map.astype(np.float32).sum() == pytest.approx(1.0, abs=2e-3)
    if name != "llava":  # no padding to a square: the map is Eq. 11 of the word rows on the grid as it is
        parsed = [extractor.prompt.parse(a) for a in ANSWERS]
        rows = extractor.answer_attention(
            extractor._inputs(squares, [extractor.prompt.format(CLASSES)] * 2),
            ANSWERS,
            [p.foreground_spans + p.background_spans for p in parsed],
        )
        expected = contrast_map([rows[1][0]], torch.stack(rows[1][1:]).mean(0)).view(grids[1].rows, grids[1].cols)
        np.testing.assert_allclose(results[1].interaction_map.astype(np.float32), expected.numpy(), atol=2e-3)
    generated = extractor(images, class_names=CLASSES)  # the generation path, batched, left padded
    assert [r.interaction_map.shape for r in generated] == [(g.rows, g.cols) for g in grids]


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


def test_softcapped_teachers_are_refused_and_unknown_families_named():
    from transformers import Gemma2Config, PaliGemmaConfig, PaliGemmaForConditionalGeneration

    _, processor = tiny_vlm("paligemma")
    tokenizer = processor.tokenizer
    text = Gemma2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        attn_logit_softcapping=50.0,
    )
    config = PaliGemmaConfig(
        text_config=text, image_token_id=tokenizer.convert_tokens_to_ids("<image>"), projection_dim=32
    )
    with pytest.raises(ValueError, match="softcaps its attention logits \\(attn_logit_softcapping=50.0"):
        InteractionExtractor(PaliGemmaForConditionalGeneration(config), processor)
    fake = torch.nn.Module()
    fake.config = type("Config", (), {"model_type": "mllama"})()
    with pytest.raises(ValueError, match="No image-token layout for VLM family 'mllama'; supported: \\['gemma3'"):
        image_token_layout(fake)
    assert family_tokenizer([]).pad_token == "<pad>"
