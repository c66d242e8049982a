"""Named VQA prompt templates of the teacher (paper section 2, Table 8 and 9), kept as data.

A template is the question text plus the rule that finds, in the teacher's answer, the character spans of the
foreground (object) words and of the background words, whose attention forms C_fore / C_back (Eq. 11/12). Register
your own with `register_prompt(PromptTemplate(...))`.

Parsing policies (each failure is a status, never a silent map; `PARSE_STATUSES` lists them):
- `"ok"`: the answer has the expected form and a foreground.
- `"malformed_answer"`: the expected form was not found (no `'foreground'` field, no "there is/are" sentence), or
  a value is a nested dict (`{'foreground': {'name': 'red'}}`), whose keys are no answer words: no map.
- `"no_foreground"`: the form is there but the foreground is empty (or says "none"): no map.
- `"foreground_not_in_classes"`: the foreground is not one of the class names (prompts that ask to choose from a
  list): the map is computed but the row is marked invalid unless the extractor accepts unlisted words.
- `"foreground_in_background"`: the foreground word is also a background word (`{'foreground': 'red',
  'background': 'red'}`): the contrast of Eq. 11 would cancel it, so no map.
- `"no_background"`: no background words: C_VLM = C_fore alone, renormalised (Eq. 11 with C_back = 0); valid.
- `"object_absent"`: the detection answer says the target is not there: no contribution to Eq. 12.
Every word of the foreground is kept (`{red, blue}`, `['red', 'blue']`, `red and blue`: C_fore averages them).
Keys may come in any order; braces and quotes may be missing or doubled; a value ends where it closes, so trailing
prose or a repeated dict adds nothing; words may repeat elsewhere in the answer (only the span inside the field
counts) and a word may be split into several tokens (all its tokens are averaged). Class names must be distinct
strings (`check_class_names`).
"""

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

PARSE_STATUSES = (
    "ok",
    "no_background",
    "malformed_answer",
    "no_foreground",
    "foreground_in_background",
    "foreground_not_in_classes",
    "object_absent",
)
Span = tuple[int, int]


@dataclass
class ParsedAnswer:
    """Where the foreground and background words are in an answer (character spans, end exclusive)."""

    status: str
    foreground: list[str] = field(default_factory=list)
    background: list[str] = field(default_factory=list)
    foreground_spans: list[Span] = field(default_factory=list)
    background_spans: list[Span] = field(default_factory=list)


@dataclass(frozen=True)
class PromptTemplate:
    """A teacher question and the parser of its answers.

    Args:
        name: registry key.
        task: `"classification"` (Eq. 11) or `"detection"` (Eq. 12, one question per target category).
        question: the text; `{class_list}` is replaced by the comma-separated class names, `{target}` by the
            detection target category.
        parse: `(answer) -> ParsedAnswer`.
        needs_class_list: whether the foreground must be one of the class names.
    """

    name: str
    task: str
    question: str
    parse: Callable[[str], ParsedAnswer]
    needs_class_list: bool = False

    def __post_init__(self):
        if self.task not in ("classification", "detection"):
            raise ValueError(f"Prompt task must be 'classification' or 'detection', got {self.task!r}.")

    def format(self, class_names: Sequence[str] | None = None, target: str | None = None) -> str:
        if self.needs_class_list and not class_names:
            raise ValueError(f"Prompt {self.name!r} lists the class names: pass class_names.")
        if class_names is not None:
            check_class_names(class_names)
        if self.task == "detection" and not target:
            raise ValueError(f"Prompt {self.name!r} asks about one target category: pass target.")
        return self.question.format(class_list=", ".join(class_names or ()), target=target)


def check_class_names(class_names) -> list[str]:
    """The class names as a list; a `ValueError` unless they are a sequence (not one string) of distinct,
    non-empty strings (distinct after lower-casing and whitespace normalisation, as answers are matched)."""
    if isinstance(class_names, (str, bytes)) or not isinstance(class_names, Sequence):
        raise ValueError(f"class_names must be a list of strings, got {type(class_names).__name__} {class_names!r}.")
    names = list(class_names)
    bad = [name for name in names if not isinstance(name, str) or not normalise_word(name)]
    if bad:
        raise ValueError(f"class_names must be non-empty strings; got {bad!r}.")
    counts = Counter(normalise_word(name) for name in names)
    duplicates = sorted(name for name, count in counts.items() if count > 1)
    if duplicates:
        raise ValueError(f"class_names must be distinct; repeated: {duplicates}.")
    return names


def normalise_word(word: str) -> str:
    """Lower case, underscores as spaces, single spaces: how answer words are compared with class names."""
    return " ".join(word.lower().replace("_", " ").split())


def _phrases(text: str, offset: int) -> tuple[list[str], list[Span]]:
    """Phrases of `text` separated by , ; / brackets, quotes (not an apostrophe inside a word) or " and ", each
    from its first to its last word character, with spans shifted by `offset`."""
    words, spans = [], []
    for piece in re.finditer(r"(?:[^,;/{}'\"\[\]]|(?<=\w)'(?=\w))+", text):
        start = piece.start()
        for part in re.split(r"(\s+and\s+)", piece.group()):
            match = re.search(r"\w(?:.*\w)?", part)
            if match is not None and not re.fullmatch(r"\s+and\s+", part):
                begin = offset + start + match.start()
                words.append(match.group())
                spans.append((begin, begin + len(match.group())))
            start += len(part)
    return words, spans


_KEY = re.compile(r"""["']?\b(foreground|background)\b["']?\s*:\s*""", re.IGNORECASE)
_CLOSING = {"{": r"\}", "[": r"\]"}
_SENTENCE_END = r"\.(?=\s|$)|\n"


def _value_end(answer: str, start: int) -> int:
    """Where the field value beginning at `start` ends: a braced or bracketed value at its closing bracket, a quoted
    one at its closing quote (the first one followed by , } ] or the end), a bare one at the next key, closing
    brace, line break or sentence end. Whatever follows (prose, a repeated dict) is not part of the value."""
    opening = answer[start : start + 1]
    if opening in _CLOSING:
        close = re.compile(_CLOSING[opening]).search(answer, start + 1)
        return close.start() if close else len(answer)
    if opening in ("'", '"'):
        close = re.compile(rf"{opening}(?=\s*(?:[,}}\]]|$))").search(answer, start + 1)
        close = close or re.compile(opening).search(answer, start + 1)
        return close.start() if close else len(answer)
    ends = [
        m.start() for m in (_KEY.search(answer, start), re.compile(rf"\}}|{_SENTENCE_END}").search(answer, start)) if m
    ]
    return min(ends, default=len(answer))


# a value that holds a `key:` pair is a nested dict or a key-value list, not words to attend to
_NESTED_KEY = re.compile(r"""\w["']?\s*:(?!//)""")
# words that say there is nothing: an empty field, not a word to attend to
_NOTHING = {"none", "null", "nothing", "nil", "n/a", "na", "empty"}


def _field(answer: str, name: str) -> tuple[list[str], list[Span]] | None:
    """The phrases of the first `name:` field of the answer (None if there is none); `("nested", ...)` marks a value
    holding `key: value` pairs. Phrases saying "none" are left out."""
    key = next((m for m in _KEY.finditer(answer) if m.group(1).lower() == name), None)
    if key is None:
        return None
    value = answer[key.end() : _value_end(answer, key.end())]
    if _NESTED_KEY.search(value):
        return "nested", []
    if normalise_word(value.strip(" {}[]'\"")) in _NOTHING:
        return [], []
    words, spans = _phrases(value, key.end())
    kept = [i for i, word in enumerate(words) if normalise_word(word) not in _NOTHING]
    return [words[i] for i in kept], [spans[i] for i in kept]


def _with_background(foreground, foreground_spans, background, background_spans) -> ParsedAnswer:
    """The status of a parsed answer that has a foreground: a foreground also named as background (articles aside)
    is no contrast."""

    def bare(word):
        return re.sub(r"^(?:a|an|the|some)\s+", "", normalise_word(word))

    if {bare(w) for w in foreground} & {bare(w) for w in background}:
        status = "foreground_in_background"
    else:
        status = "ok" if background else "no_background"
    return ParsedAnswer(status, foreground, background, foreground_spans, background_spans)


def parse_foreground_background(answer: str) -> ParsedAnswer:
    """Prompt 1: `{'foreground': {X}, 'background': {Y, Z}}`, keys in any order, braces and quotes optional;
    each value ends where it closes (trailing prose and repeated dicts are ignored). Every foreground word is kept
    (`{red, blue}` gives both); a value holding `key: value` pairs (a nested dict) is malformed."""
    foreground = _field(answer, "foreground")
    background = _field(answer, "background") or ([], [])
    if foreground is None or foreground[0] == "nested" or background[0] == "nested":
        return ParsedAnswer("malformed_answer")
    if not foreground[0]:
        return ParsedAnswer("no_foreground")
    return _with_background(*foreground, *background)


def parse_single_phrase(answer: str) -> ParsedAnswer:
    """Prompt 2: the whole (single word or phrase) answer is the foreground."""
    words, spans = _phrases(answer, 0)
    if not words:
        return ParsedAnswer("no_foreground")
    start, end = spans[0][0], spans[-1][1]
    return ParsedAnswer("no_background", [answer[start:end]], [], [(start, end)], [])


def parse_description(answer: str) -> ParsedAnswer:
    """Prompt 3: C_VLM is the average over all the answer's words."""
    spans = [(m.start(), m.end()) for m in re.finditer(r"[A-Za-z0-9]+", answer)]
    if not spans:
        return ParsedAnswer("no_foreground")
    return ParsedAnswer("no_background", [answer[s:e] for s, e in spans], [], spans, [])


def parse_detection(answer: str) -> ParsedAnswer:
    """Detection: `Yes, there is/are {tgt_obj} in the image, and the background is {background}.`"""
    if re.match(r"\s*no\b", answer, re.IGNORECASE):
        return ParsedAnswer("object_absent")
    target = re.search(
        r"there\s+(?:is|are)\s+(?:/\s*are\s+)?(?:(?:a|an|the|some)\s+)?(.+?)\s+in\s+(?:the|this)\s+(?:image|picture)",
        answer,
        re.IGNORECASE,
    )
    if target is None:
        return ParsedAnswer("malformed_answer")
    if _NESTED_KEY.search(target.group(1)):
        return ParsedAnswer("malformed_answer")
    foreground, foreground_spans = _phrases(target.group(1), target.start(1))
    if not foreground:
        return ParsedAnswer("no_foreground")
    back = re.search(r"background\s+(?:is|are)\s+", answer[target.end() :], re.IGNORECASE)
    background, background_spans = [], []
    if back is not None:
        start = target.end() + back.end()
        end = next((m.start() for m in re.finditer(_SENTENCE_END, answer[start:])), len(answer) - start)
        if _NESTED_KEY.search(answer[start : start + end]):
            return ParsedAnswer("malformed_answer")
        background, background_spans = _phrases(answer[start : start + end], start)
    return _with_background(foreground, foreground_spans, background, background_spans)


PROMPTS: dict[str, PromptTemplate] = {}


def register_prompt(template: PromptTemplate, overwrite: bool = False) -> None:
    """Add a template to the registry under `template.name`."""
    if template.name in PROMPTS and not overwrite:
        raise ValueError(f"A prompt named {template.name!r} is already registered (pass overwrite=True).")
    PROMPTS[template.name] = template


def get_prompt(name_or_template: "str | PromptTemplate") -> PromptTemplate:
    if isinstance(name_or_template, PromptTemplate):
        return name_or_template
    if name_or_template not in PROMPTS:
        raise ValueError(f"Unknown prompt {name_or_template!r}; registered: {sorted(PROMPTS)}.")
    return PROMPTS[name_or_template]


for _template in (
    PromptTemplate(
        "classification_fg_bg",  # prompt 1, the paper's best (Table 8)
        "classification",
        "If you are doing an image classification task, what is the foreground and what is the background? The answer "
        "format is as follows: {{'foreground': {{}}, 'background': {{}}}}. Please choose the foreground word from the "
        "list below: {class_list}",
        parse_foreground_background,
        needs_class_list=True,
    ),
    PromptTemplate(
        "classification_object",  # prompt 2
        "classification",
        "If you are doing an image classification task, What is the object in the picture? Answer the question using a "
        "single word or phrase.",
        parse_single_phrase,
    ),
    PromptTemplate(
        "classification_describe",  # prompt 3
        "classification",
        "Please describe the object in the picture in detail.",
        parse_description,
    ),
    PromptTemplate(
        "detection_fg_bg",  # Table 9, with the ground-truth boxes drawn on the image
        "detection",
        "If you are doing an object detection task, please tell me if there is/are {target} in this image. The answer "
        "format is as follows: Yes, there is/are {target} in the image, and the background is {{background}}.",
        parse_detection,
    ),
):
    register_prompt(_template)

__all__ = [
    "PARSE_STATUSES",
    "PROMPTS",
    "ParsedAnswer",
    "PromptTemplate",
    "check_class_names",
    "get_prompt",
    "normalise_word",
    "parse_description",
    "parse_detection",
    "parse_foreground_background",
    "parse_single_phrase",
    "register_prompt",
]
