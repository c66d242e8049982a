import pytest

from hf_lfi.interactions.prompts import (
    PROMPTS,
    PromptTemplate,
    get_prompt,
    parse_description,
    parse_detection,
    parse_foreground_background,
    parse_single_phrase,
    register_prompt,
)


def words(answer, spans):
    return [answer[start:end] for start, end in spans]


@pytest.mark.parametrize(
    "answer,status,foreground,background",
    [
        ("{'foreground': {owl}, 'background': {rocket, sky}}", "ok", ["owl"], ["rocket", "sky"]),
        ('{"foreground": "owl", "background": "sky and grass"}', "ok", ["owl"], ["sky", "grass"]),
        ("foreground: owl, background: sky", "ok", ["owl"], ["sky"]),  # braces and quotes missing
        ("{'foreground': {Smileys & Emotion}, 'background': {}}", "no_background", ["Smileys & Emotion"], []),
        ("{'foreground': {owl}}", "no_background", ["owl"], []),
        ("{'foreground': {}, 'background': {sky}}", "no_foreground", [], []),
        ("It is an owl in the sky.", "malformed_answer", [], []),
        ("", "malformed_answer", [], []),
    ],
)
def test_foreground_background_parsing(answer, status, foreground, background):
    parsed = parse_foreground_background(answer)
    assert parsed.status == status and parsed.foreground == foreground and parsed.background == background
    assert words(answer, parsed.foreground_spans) == foreground and words(answer, parsed.background_spans) == background


def test_a_repeated_word_counts_only_inside_its_field():
    answer = "{'foreground': {owl}, 'background': {owl statue, sky}} owl"
    parsed = parse_foreground_background(answer)
    assert parsed.foreground_spans == [(answer.index("owl"), answer.index("owl") + 3)]
    assert words(answer, parsed.background_spans) == ["owl statue", "sky"]


@pytest.mark.parametrize(
    "answer,status,foreground,background",
    [
        ("Yes, there is a cat in the image, and the background is grass.", "ok", ["cat"], ["grass"]),
        ("Yes, there are dogs and cats in this image, and the background is a sofa, a wall.", "ok", ["dogs", "cats"], ["a sofa", "a wall"]),
        ("Yes, there is a cat in the image.", "no_background", ["cat"], []),
        ("No, there is no cat in the image.", "object_absent", [], []),
        ("A cat sits on grass.", "malformed_answer", [], []),
    ],
)
def test_detection_parsing(answer, status, foreground, background):
    parsed = parse_detection(answer)
    assert (parsed.status, parsed.foreground, parsed.background) == (status, foreground, background)
    assert words(answer, parsed.foreground_spans) == foreground


def test_single_phrase_and_description():
    parsed = parse_single_phrase("Snowy owl.")
    assert parsed.status == "no_background" and parsed.foreground == ["Snowy owl"]
    described = parse_description("A white owl, on a branch.")
    assert described.foreground == ["A", "white", "owl", "on", "a", "branch"]
    assert parse_single_phrase("...").status == "no_foreground"


def test_registry_and_formatting():
    prompt = get_prompt("classification_fg_bg")
    text = prompt.format(["owl", "cat"])
    assert text.endswith("list below: owl, cat") and "{'foreground': {}, 'background': {}}" in text
    assert "there is/are dog in this image" in get_prompt("detection_fg_bg").format(target="dog")
    with pytest.raises(ValueError, match="pass class_names"):
        prompt.format()
    with pytest.raises(ValueError, match="Unknown prompt 'nope'"):
        get_prompt("nope")
    custom = PromptTemplate("test_custom", "classification", "What animal is this?", parse_single_phrase)
    register_prompt(custom)
    try:
        assert get_prompt("test_custom") is custom
        with pytest.raises(ValueError, match="already registered"):
            register_prompt(custom)
    finally:
        PROMPTS.pop("test_custom")
