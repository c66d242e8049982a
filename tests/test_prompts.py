import pytest

from hf_lfi.interactions.prompts import (
    PROMPTS,
    PromptTemplate,
    check_class_names,
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
        # real answers: quoted values end where they close, trailing prose is ignored
        (
            "{'foreground': 'golden retriever', 'background': 'grass'}. The dog is sitting on the grass.",
            "ok",
            ["golden retriever"],
            ["grass"],
        ),
        # a repeated dict adds neither its keys nor its values
        (
            "{'foreground': 'owl', 'background': 'sky'} {'foreground': 'cat', 'background': 'sofa'}",
            "ok",
            ["owl"],
            ["sky"],
        ),
        # any key order
        ("{'background': 'grass, sky', 'foreground': 'dog'}", "ok", ["dog"], ["grass", "sky"]),
        ("{'background': {grass}, 'foreground': {dog}} The dog runs.", "ok", ["dog"], ["grass"]),
        # the same word on both sides is no contrast: a status of its own
        ("{'foreground': 'red', 'background': 'red'}", "foreground_in_background", ["red"], ["red"]),
        ("{'foreground': {Red}, 'background': {sky, red}}", "foreground_in_background", ["Red"], ["sky", "red"]),
        # bare values end at the next key, a closing brace or the sentence's end
        ("foreground: owl. background: sky. The owl flies.", "ok", ["owl"], ["sky"]),
        ("foreground: owl\nbackground: sky\nIt is night.", "ok", ["owl"], ["sky"]),
        # a quote inside a quoted value (an apostrophe) does not end it
        ("{'foreground': 'owl's nest', 'background': 'tree'}", "ok", ["owl's nest"], ["tree"]),
        ('{"foreground": ["owl"], "background": ["sky", "moon"]} Both are visible.', "ok", ["owl"], ["sky", "moon"]),
        ("{'foreground': 'owl'}. The background is sky.", "no_background", ["owl"], []),
        # every foreground word is kept, from a set, a list or "and"
        ("{'foreground': {red, blue}, 'background': {sky}}", "ok", ["red", "blue"], ["sky"]),
        ("{'foreground': ['red', 'blue'], 'background': ['sky']}", "ok", ["red", "blue"], ["sky"]),
        ("{'foreground': 'owl and cat', 'background': 'sky'}", "ok", ["owl", "cat"], ["sky"]),
        ("{'foreground': {red, blue}, 'background': {blue}}", "foreground_in_background", ["red", "blue"], ["blue"]),
        # a nested dict is no answer: its keys are not words the teacher looked at
        ('{"foreground": {"name": "red"}, "background": {"sky"}}', "malformed_answer", [], []),
        ("{'foreground': 'red', 'background': {'color': 'sky'}}", "malformed_answer", [], []),
        # "none" is an empty field, not a word
        ("{'foreground': None, 'background': {sky}}", "no_foreground", [], []),
        ("{'foreground': 'n/a', 'background': 'sky'}", "no_foreground", [], []),
        ("{'foreground': 'owl', 'background': 'none'}", "no_background", ["owl"], []),
    ],
)
def test_foreground_background_parsing(answer, status, foreground, background):
    parsed = parse_foreground_background(answer)
    assert parsed.status == status and parsed.foreground == foreground and parsed.background == background
    assert (
        words(answer, parsed.foreground_spans) == foreground and words(answer, parsed.background_spans) == background
    )


def test_a_repeated_word_counts_only_inside_its_field():
    answer = "{'foreground': {owl}, 'background': {owl statue, sky}} owl"
    parsed = parse_foreground_background(answer)
    assert parsed.foreground_spans == [(answer.index("owl"), answer.index("owl") + 3)]
    assert words(answer, parsed.background_spans) == ["owl statue", "sky"]


@pytest.mark.parametrize(
    "answer,status,foreground,background",
    [
        ("Yes, there is a cat in the image, and the background is grass.", "ok", ["cat"], ["grass"]),
        (
            "Yes, there are dogs and cats in this image, and the background is a sofa, a wall.",
            "ok",
            ["dogs", "cats"],
            ["a sofa", "a wall"],
        ),
        ("Yes, there is a cat in the image.", "no_background", ["cat"], []),
        ("No, there is no cat in the image.", "object_absent", [], []),
        ("A cat sits on grass.", "malformed_answer", [], []),
        ("Yes, there is a cat in the image, and the background is grass. The cat sleeps.", "ok", ["cat"], ["grass"]),
        (
            "Yes, there is a cat in the image, and the background is a cat.",
            "foreground_in_background",
            ["cat"],
            ["a cat"],
        ),
        ("Yes, there is a cat in the image, and the background is {grass: green}.", "malformed_answer", [], []),
        ("Yes, there is {name: cat} in the image.", "malformed_answer", [], []),
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


@pytest.mark.parametrize(
    "class_names,message",
    [
        ("red", "must be a list of strings, got str"),
        (["owl", "red", "owl"], "repeated: \\['owl'\\]"),
        (["Golden Retriever", "golden_retriever"], "repeated: \\['golden retriever'\\]"),
        (["owl", 3], "non-empty strings"),
        (["owl", "  "], "non-empty strings"),
        ({"owl", "red"}, "must be a list of strings, got set"),
    ],
)
def test_class_names_must_be_distinct_strings(class_names, message):
    with pytest.raises(ValueError, match=message):
        check_class_names(class_names)
    with pytest.raises(ValueError, match=message):
        get_prompt("classification_fg_bg").format(class_names)


def test_registry_and_formatting():
    prompt = get_prompt("classification_fg_bg")
    text = prompt.format(["owl", "cat"])
    assert text.endswith("list below: owl, cat") and "{'foreground': {}, 'background': {}}" in text
    assert "there is/are dog in this image" in get_prompt("detection_fg_bg").format(target="dog")
    with pytest.raises(ValueError, match="pass class_names"):
        prompt.format()
    with pytest.raises(ValueError, match="Unknown prompt 'nope'"):
        get_prompt("nope")
    with pytest.raises(ValueError, match="Prompt task must be 'classification' or 'detection', got 'segmentation'"):
        PromptTemplate("test_bad", "segmentation", "What?", parse_single_phrase)  # also when never registered
    custom = PromptTemplate("test_custom", "classification", "What animal is this?", parse_single_phrase)
    register_prompt(custom)
    try:
        assert get_prompt("test_custom") is custom
        with pytest.raises(ValueError, match="already registered"):
            register_prompt(custom)
    finally:
        PROMPTS.pop("test_custom")
