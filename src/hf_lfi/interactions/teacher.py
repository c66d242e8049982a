"""The teacher: interaction maps C_VLM from a VLM's answer (paper section 2, Eq. 10-12).

Any `AutoModelForImageTextToText` family with an image-token layout adapter (`layouts.LAYOUTS`). `InteractionExtractor`
asks a named VQA prompt (`prompts.py`) about each image, generates the answer greedily (batched, left padded) and
parses it into foreground and background words. The attention rows of the answer tokens against the image tokens
are recorded *during* generation: the attention function `"lfi_capture"` (registered with
`transformers.AttentionInterface`) runs SDPA for the outputs and, at every decode step, keeps a reference to the query
of the token just fed back, its mask and the layer's keys (KV cache). After parsing, one batched product per layer
turns them into softmax rows over the image tokens (`DecodeStepRecorder`): exactly the rows `generate` computed, with
its own masks and positions (left padding, M-RoPE), grouped-query heads read without repeating the keys. The last
answer token is never fed back; only when a parsed word ends on it does one more decode step read its row. So the
teacher costs `generate` plus that product; the full attention matrix is never materialised and
`output_attentions` is never used. Teacher-forced answers (`answers=`) need no generation: one forward pass over
prompt + answer records their rows (`AttentionRowRecorder`), its inputs built by generate's own steps.

The capture keeps the model's own outputs: an eager text model stays eager (its own eager attention, e.g. Gemma-2's
softcapped logits in PaliGemma-2, whose rows are then captured from the softcapped scores), any other runs SDPA.

Aggregation (documented defaults): the rows are averaged over heads (`head_reduction="mean"`) and over all text
layers (`layers=None`); the tokens of one word are averaged, then the words of the foreground (resp. background).

LLaVA-1.5 images are padded to a square with the processor's mean colour first (its own `pad` preprocessing, so
nothing is cropped away) and the map is cut back to the image's area; other families use their processor's
preprocessing. Maps live on the family's grid (24 x 24 for LLaVA-1.5, any (rows, cols) for Qwen2-VL), covering the
whole image like the student's resized input.
"""

import contextvars
import importlib
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from os.path import commonprefix

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.nn import functional as F
from torch.nn.utils.rnn import pad_sequence
from transformers import AttentionInterface, Cache
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, eager_mask, sdpa_mask

from .layouts import ImageGrid, image_token_layout
from .maps import contrast_map, crop_interaction_map
from .processor_match import check_processor_matches
from .prompts import ParsedAnswer, PromptTemplate, get_prompt, normalise_word

CAPTURE_ATTENTION = "lfi_capture"
CAPTURE_EAGER_ATTENTION = "lfi_capture_eager"
HEAD_REDUCTIONS = ("mean", "max")
VALID_STATUSES = ("ok", "no_background")
_ACTIVE_RECORDER: contextvars.ContextVar = contextvars.ContextVar("hf_lfi_attention_recorder", default=None)


def _softcapped(scores: torch.Tensor, softcap: float | None) -> torch.Tensor:
    """Gemma-2's attention logit softcapping, softcap * tanh(scores / softcap); identity without one."""
    return scores if not softcap else torch.tanh(scores / softcap) * softcap


def answer_row_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    attention_mask: torch.Tensor | None,
    rows: torch.Tensor | None,
    columns: torch.Tensor,
    scaling: float,
    softcap: float | None = None,
) -> torch.Tensor:
    """softmax(softcap(q_rows k^T * scaling) + mask) restricted to `columns`: (batch, heads, R, N), in float32.

    Args:
        query: (batch, heads, Q, d); key: (batch, kv_heads, K, d): query head h reads key head h // (heads / kv_heads)
            (grouped-query attention), without repeating the keys.
        attention_mask: None (causal, no padding), a boolean (True = attend) or an additive float mask,
            broadcastable to (batch, 1 or heads, Q, K).
        rows: (batch, R) query positions, or None for all Q of them; columns: (batch, N) key positions (the image
            tokens).
        softcap: the attention logit softcap of the layer (Gemma-2), if any.
    """
    batch, heads, q_len, dim = query.shape
    kv_heads, k_len = key.shape[1], key.shape[2]
    columns = columns.to(query.device)  # layers may sit on several devices
    if rows is None:
        rows = torch.arange(q_len, device=query.device).expand(batch, q_len)
        selected, mask = query, attention_mask
    else:
        rows = rows.to(query.device)
        selected = query.gather(2, rows[:, None, :, None].expand(batch, heads, rows.shape[1], dim))
        mask = None if attention_mask is None else attention_mask.expand(batch, -1, q_len, k_len)
        mask = None if mask is None else mask.gather(2, rows[:, None, :, None].expand(*mask.shape[:2], -1, k_len))
    grouped = selected.float().reshape(batch, kv_heads, -1, dim)  # (batch, kv_heads, groups * R, d)
    scores = (grouped @ key.float().transpose(-1, -2)).view(batch, heads, rows.shape[1], k_len)
    scores = _softcapped(scores * scaling, softcap)
    if mask is None:
        causal = torch.arange(k_len, device=rows.device) <= (rows + k_len - q_len)[..., None]
        scores = scores.masked_fill(~causal[:, None], float("-inf"))
    else:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask.float()
    probabilities = scores.softmax(dim=-1)
    return probabilities.gather(3, columns[:, None, None, :].expand(batch, heads, rows.shape[1], columns.shape[1]))


def _reduce_heads(rows: torch.Tensor, head_reduction: str) -> torch.Tensor:
    return rows.mean(1) if head_reduction == "mean" else rows.amax(1)


class _Recorder:
    """What both recorders share: the watched attention modules (id -> layer index), the head reduction, and
    `recording()`, which makes the recorder the one `capture_attention_forward` reports to."""

    def __init__(self, modules: dict[int, int], head_reduction: str = "mean"):
        if head_reduction not in HEAD_REDUCTIONS:
            raise ValueError(f"head_reduction must be one of {HEAD_REDUCTIONS}, got {head_reduction!r}.")
        self.modules = modules
        self.head_reduction = head_reduction

    @contextmanager
    def recording(self):
        token = _ACTIVE_RECORDER.set(self)
        try:
            yield self
        finally:
            _ACTIVE_RECORDER.reset(token)


class AttentionRowRecorder(_Recorder):
    """Collects `answer_row_attention` of chosen attention modules during one forward pass over prompt + answer."""

    def __init__(
        self, modules: dict[int, int], rows: torch.Tensor, columns: torch.Tensor, head_reduction: str = "mean"
    ):
        super().__init__(modules, head_reduction)
        self.rows = rows
        self.columns = columns
        self.maps: dict[int, torch.Tensor] = {}  # layer -> (batch, R, N)

    def record(self, module, query, key, attention_mask, scaling, softcap) -> None:
        rows = answer_row_attention(query, key, attention_mask, self.rows, self.columns, scaling, softcap)
        self.maps[self.modules[id(module)]] = _reduce_heads(rows, self.head_reduction)


class DecodeStepRecorder(_Recorder):
    """The answer rows of `generate`, at the price of one batched product per layer after decoding.

    The first call of a watched layer is the prefill (the prompt's keys: its length). Every later call is a decode
    step feeding back one answer token: the recorder keeps references to its query and mask and to the layer's
    keys, which grow with the cache and so cover every earlier step; nothing is computed while decoding. `rows()`
    then gives, per layer, the head-reduced attention of every fed token over the image tokens `columns`
    (batch, steps, N). A sliding-window layer whose cache starts dropping its oldest keys computes its pending
    steps first, while the keys are still there, and each later step at once against its own window.
    """

    def __init__(self, modules: dict[int, int], columns: torch.Tensor, head_reduction: str = "mean"):
        super().__init__(modules, head_reduction)
        self.columns = columns
        self.prompt_length: dict[int, int] = {}
        self.attention: dict[int, tuple[float, float | None]] = {}  # layer -> (scaling, softcap)
        self.keys: dict[int, torch.Tensor] = {}  # layer -> its latest keys
        self.pending: dict[int, list] = {}  # layer -> [(query, mask, key length)] of steps not computed yet
        self.done: dict[int, list[torch.Tensor]] = {}  # layer -> computed (batch, steps, N) chunks, in order
        self.steps: dict[int, int] = {}
        self._masks: dict[tuple, tuple] = {}  # shared by the layers that share their masks (one per layer type)

    def record(self, module, query, key, attention_mask, scaling, softcap) -> None:
        layer = self.modules[id(module)]
        if layer not in self.prompt_length:
            self.prompt_length[layer], self.attention[layer] = key.shape[2], (scaling, softcap)
            self.keys[layer], self.pending[layer], self.done[layer], self.steps[layer] = key, [], [], 0
            return
        if query.shape[2] != 1:
            raise ValueError(
                f"The answer rows are recorded one decode step at a time; got {query.shape[2]} query tokens after the "
                "prefill (assisted or chunked generation is not supported by the capture)."
            )
        self.steps[layer] += 1
        seen = self.prompt_length[layer] + self.steps[layer]  # positions this step can attend to
        if key.shape[2] == seen:
            self.keys[layer] = key
            self.pending[layer].append((query, attention_mask, seen))
            return
        self._flush(layer)  # the cache dropped its oldest keys: compute the waiting steps against the last full keys
        offset = seen - key.shape[2]  # the window holds positions [offset, seen)
        self.done[layer].append(self._rows(layer, [(query, attention_mask, key.shape[2])], key, offset))

    def _mask(self, steps: list, key_length: int, reference: torch.Tensor) -> torch.Tensor:
        """The mask (batch, 1, steps, key_length) of the steps' query rows: each step's own mask over its keys (all of
        them without one), nothing beyond (later tokens); boolean, or additive if the model's masks are."""
        cache_key = (tuple(id(mask) for _, mask, _ in steps), tuple(n for *_, n in steps), key_length)
        if cache_key in self._masks:
            return self._masks[cache_key][1]
        lengths = torch.tensor([n for *_, n in steps], device=reference.device)
        if all(mask is None for _, mask, _ in steps):  # causal only: a step sees its first `length` keys
            mask = (torch.arange(key_length, device=reference.device) < lengths[:, None]).expand(
                len(reference), 1, -1, -1
            )
        else:  # one padded stack of the steps' last mask rows (batch, length) -> (batch, 1, steps, key_length)
            full = next(mask for _, mask, _ in steps if mask is not None)
            fill, visible = (False, True) if full.dtype == torch.bool else (float("-inf"), 0.0)
            last = [
                (mask if mask is not None else full.new_full((), visible).expand(*full.shape[:-1], n))[:, 0, -1]
                for _, mask, n in steps
            ]
            mask = pad_sequence(
                [row.T for row in last], batch_first=True, padding_value=fill
            )  # (steps, length, batch)
            mask = F.pad(mask, (0, 0, 0, key_length - mask.shape[1]), value=fill).permute(2, 0, 1)[:, None]
        # the masks stay referenced with the result, so their ids are not reused while the entry lives
        self._masks[cache_key] = ([mask for _, mask, _ in steps], mask)
        return mask

    def _rows(self, layer: int, steps: list, key: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """(batch, steps, N): the head-reduced attention of `steps` over the image columns, with `key` holding the
        positions from `offset` on (columns before it fell out of a sliding window: zero)."""
        query = torch.cat([q for q, _, _ in steps], dim=2)
        columns = self.columns.to(query.device) - offset
        scaling, softcap = self.attention[layer]
        mask = self._mask(steps, key.shape[2], query)
        attention = answer_row_attention(query, key, mask, None, columns.clamp_min(0), scaling, softcap)
        if offset:
            attention = attention.masked_fill((columns < 0)[:, None, None, :], 0.0)
        return _reduce_heads(attention, self.head_reduction)

    def _flush(self, layer: int) -> None:
        if self.pending[layer]:
            self.done[layer].append(self._rows(layer, self.pending[layer], self.keys[layer]))
            self.pending[layer] = []

    def rows(self) -> dict[int, torch.Tensor]:
        """Per watched layer, (batch, fed tokens, N): row t is the attention of the t-th fed answer token."""
        for layer in self.pending:
            self._flush(layer)
        self._masks.clear()
        empty = self.columns.new_zeros((*self.columns.shape[:1], 0, self.columns.shape[1]), dtype=torch.float32)
        return {layer: torch.cat([empty, *chunks], dim=1) for layer, chunks in self.done.items()}


def _record(module, query, key, attention_mask, kwargs) -> None:
    """Report the call to the active recorder when it watches `module`."""
    recorder = _ACTIVE_RECORDER.get()
    if recorder is not None and id(module) in recorder.modules:
        scaling = kwargs.get("scaling") or query.shape[-1] ** -0.5
        recorder.record(module, query, key, attention_mask, scaling, kwargs.get("softcap"))


def capture_attention_forward(module, query, key, value, attention_mask, **kwargs):
    """SDPA, plus the answer rows for the active recorder when it watches `module`."""
    _record(module, query, key, attention_mask, kwargs)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def capture_eager_attention_forward(module, query, key, value, attention_mask, **kwargs):
    """The model's own eager attention (its softcap included), plus the answer rows for the active recorder."""
    _record(module, query, key, attention_mask, kwargs)
    eager = getattr(importlib.import_module(type(module).__module__), "eager_attention_forward", None)
    if eager is None:
        raise ValueError(
            f"{type(module).__name__} has no module-level eager_attention_forward to keep the teacher eager: load it "
            "with attn_implementation='sdpa'."
        )
    return eager(module, query, key, value, attention_mask, **kwargs)


# without a registered mask function the models build no mask at all for a custom attention (padding ignored)
AttentionInterface.register(CAPTURE_ATTENTION, capture_attention_forward)
AttentionMaskInterface.register(CAPTURE_ATTENTION, sdpa_mask)
AttentionInterface.register(CAPTURE_EAGER_ATTENTION, capture_eager_attention_forward)
AttentionMaskInterface.register(CAPTURE_EAGER_ATTENTION, eager_mask)


def _text_config_name(model) -> str:
    text_config = model.config.get_text_config()
    return next((name for name in model.config.sub_configs if getattr(model.config, name, None) is text_config), "")


@contextmanager
def capture_attention(model):
    """Temporarily switch `model`'s text model to the capturing attention (the vision tower keeps its own, which
    some towers special-case); restore it afterwards. An eager text model stays eager (`"lfi_capture_eager"`: its own
    eager attention and masks, e.g. Gemma-2's softcap); any other runs SDPA (`"lfi_capture"`)."""
    name = _text_config_name(model)
    config = getattr(model.config, name) if name else model.config
    previous = config._attn_implementation
    capture = CAPTURE_EAGER_ATTENTION if previous == "eager" else CAPTURE_ATTENTION
    model.set_attn_implementation({name: capture} if name else capture)
    try:
        yield
    finally:
        model.set_attn_implementation({name: previous} if name else previous)


def token_spans(tokenizer, token_ids: Sequence[int]) -> tuple[str, list[tuple[int, int]]]:
    """The answer of generated `token_ids` (special tokens removed, stripped, as `batch_decode` gives it) and each
    token's character span in it, from decoding the growing prefixes: a token that adds no text (EOS, padding, a
    byte completed by the next token) spans nothing."""
    prefixes = tokenizer.batch_decode([token_ids[: t + 1] for t in range(len(token_ids))], skip_special_tokens=True)
    text = prefixes[-1] if prefixes else ""
    lead, answer = len(text) - len(text.lstrip()), text.strip()
    spans, end = [], 0
    for prefix in prefixes:
        start, end = end, max(end, len(commonprefix([prefix, text])))
        spans.append((min(max(start - lead, 0), len(answer)), min(max(end - lead, 0), len(answer))))
    return answer, spans


def _token_groups(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]) -> list[list[int]]:
    """For each character span, the tokens (by their character `offsets`) that overlap it."""
    return [[t for t, (a, b) in enumerate(offsets) if a < end and b > start and b > a] for start, end in spans]


@dataclass
class GeneratedAnswers:
    """`InteractionExtractor.generate_answers`: the answers, their tokens' character spans, and what the answer
    rows need (the generated sequences, the KV cache and the recorder that watched the decoding)."""

    answers: list[str]
    token_spans: list[list[tuple[int, int]]]
    sequences: torch.Tensor
    cache: Cache
    recorder: DecodeStepRecorder


@dataclass
class TeacherInteraction:
    """One image's teacher output: the map on the teacher grid (float16, sums to 1 or all zero), the answer, the
    parsed words and the status (`prompts.PARSE_STATUSES` or `"empty_map"`); `valid` rows train the alignment."""

    interaction_map: np.ndarray
    answer: str
    foreground: list[str] = field(default_factory=list)
    background: list[str] = field(default_factory=list)
    status: str = "ok"
    valid: bool = True


def expand_to_square(image: Image.Image, fill: tuple[int, int, int]) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """LLaVA-1.5's `pad` preprocessing: the image centred on a square of `fill`; also returns its box there."""
    width, height = image.size
    side = max(width, height)
    square = Image.new("RGB", (side, side), fill)
    left, top = (side - width) // 2, (side - height) // 2
    square.paste(image.convert("RGB"), (left, top))
    return square, (left, top, left + width, top + height)


def draw_boxes(image: Image.Image, boxes: Sequence[Sequence[float]], width: int | None = None) -> Image.Image:
    """The visual prompt of the detection question (Table 9): red COCO boxes (x, y, w, h) drawn on a copy."""
    image = image.convert("RGB").copy()
    draw = ImageDraw.Draw(image)
    line = width or max(2, round(min(image.size) / 100))
    for x, y, w, h in boxes:
        if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > image.size[0] + 1 or y + h > image.size[1] + 1:
            raise ValueError(
                f"Box {(x, y, w, h)} (x, y, width, height) lies outside the {image.size[0]}x{image.size[1]} image."
            )
        draw.rectangle([x, y, x + w, y + h], outline=(255, 0, 0), width=line)
    return image


class InteractionExtractor:
    """Teacher interaction maps from a VLM (`AutoModelForImageTextToText` of a family in `layouts.LAYOUTS`).

    Args:
        model, processor: the teacher and its `AutoProcessor`.
        prompt: a registered prompt name (`prompts.PROMPTS`) or a `PromptTemplate`.
        layers: text-layer indices whose rows are averaged (None: all).
        head_reduction: `"mean"` or `"max"` over heads.
        max_new_tokens: answer length limit of the greedy generation.
        accept_unlisted_foreground: keep rows whose foreground is not a class name valid (default: invalid).
    """

    def __init__(
        self,
        model,
        processor,
        prompt: "str | PromptTemplate" = "classification_fg_bg",
        layers: Sequence[int] | None = None,
        head_reduction: str = "mean",
        max_new_tokens: int = 64,
        accept_unlisted_foreground: bool = False,
    ):
        self.model = model
        self.processor = processor
        self.prompt = get_prompt(prompt)
        self.layout = image_token_layout(model)
        decoder_layers = model.get_decoder().layers
        self.layers = list(range(len(decoder_layers))) if layers is None else list(layers)
        unknown = [i for i in self.layers if not 0 <= i < len(decoder_layers)]
        if unknown:
            raise ValueError(f"layers {unknown} do not exist: the teacher has {len(decoder_layers)} text layers.")
        if not self.layers or len(set(self.layers)) != len(self.layers):
            raise ValueError(f"layers must name distinct text layers (None: all), got {self.layers}.")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1 (the answer's length limit), got {max_new_tokens}.")
        if head_reduction not in HEAD_REDUCTIONS:
            raise ValueError(f"head_reduction must be one of {HEAD_REDUCTIONS}, got {head_reduction!r}.")
        self._attention_modules = {id(decoder_layers[i].self_attn): i for i in self.layers}
        self.head_reduction = head_reduction
        self.max_new_tokens = max_new_tokens
        self.accept_unlisted_foreground = accept_unlisted_foreground
        mean = getattr(processor.image_processor, "image_mean", None) or (0.5, 0.5, 0.5)
        self._pad_colour = tuple(int(255 * m) for m in mean)  # LLaVA's own `pad` truncates
        # a processor of another model fails deep in the forward: try it on one prompt first
        check_processor_matches(model, processor, self._inputs([Image.new("RGB", (224, 224))], ["?"]))

    # ----------------------------------------------------------------------------------------------- prompting
    def _chat_text(self, question: str) -> str:
        if getattr(self.processor, "chat_template", None):
            conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
            return self.processor.apply_chat_template(conversation, add_generation_prompt=True)
        if self.model.config.model_type == "paligemma":
            return f"{self.processor.image_token}{question}"  # no chat format: the processor expands it, adds BOS
        return f"USER: <image>\n{question} ASSISTANT:"  # LLaVA-1.5's conversation format

    def _inputs(self, images: Sequence[Image.Image], questions: Sequence[str]):
        tokenizer = self.processor.tokenizer
        side, tokenizer.padding_side = tokenizer.padding_side, "left"
        try:
            texts = [
                self._chat_text(question) for question in questions
            ]  # one image per prompt, nested as processors batch
            inputs = self.processor(
                images=[[image] for image in images], text=texts, padding=True, return_tensors="pt"
            )
        finally:
            tokenizer.padding_side = side
        inputs.pop("labels", None)  # PaliGemma's processor adds training labels
        return inputs.to(self.model.device)

    def _image_columns(self, inputs) -> torch.Tensor:
        """(batch, N) the sequence positions of each prompt's grid cells, row-major, padded with 0."""
        grids = self.layout.grids(inputs)
        columns = torch.zeros((len(grids), max(len(g.positions) for g in grids)), dtype=torch.long)
        for i, grid in enumerate(grids):
            columns[i, : len(grid.positions)] = grid.positions
        return columns.to(inputs["input_ids"].device)

    def _generation_kwargs(self, inputs, answer_mask: torch.Tensor) -> dict:
        """The model kwargs of prompt + answer as `generate()` builds and extends them: the prompt's positions
        (`_prepare_position_ids_for_generation`: left padding, M-RoPE), every per-token input extended over the
        answer as decoding extends it (`_update_model_kwargs_for_generation`: PaliGemma's causal suffix
        `token_type_ids`, text `mm_token_type_ids`, positions), and the attention mask of prompt + answer."""
        model = self.model
        kwargs = dict(inputs)
        kwargs["position_ids"] = model._prepare_position_ids_for_generation(inputs["input_ids"], dict(inputs))
        kwargs = model._update_model_kwargs_for_generation({}, kwargs, num_new_tokens=answer_mask.shape[1])
        kwargs.pop("input_ids")
        kwargs["attention_mask"] = torch.cat([inputs["attention_mask"], answer_mask], dim=1)
        return kwargs

    def _layer_mean(self, maps: dict[int, torch.Tensor]) -> torch.Tensor:
        device = maps[self.layers[0]].device
        return torch.stack([maps[i].to(device) for i in self.layers]).mean(0).float().cpu()

    def _span_rows(self, groups, rows: torch.Tensor, index, inputs) -> list[list[torch.Tensor]]:
        """Per batch row, per span: the mean over the span's tokens of their rows (index[i][t]: token t's row in
        `rows[i]`), cut to the row's grid; [] for a span without tokens."""
        grids = self.layout.grids(inputs)
        return [
            [
                rows[i, [index[i][t] for t in group], : len(grids[i].positions)].mean(0) if group else []
                for group in row
            ]
            for i, row in enumerate(groups)
        ]

    # ---------------------------------------------------------------------------------------------- generation
    @torch.no_grad()
    def generate_answers(self, inputs) -> GeneratedAnswers:
        """Greedy answers of the batch (left padded, special tokens removed), generated with the capturing attention:
        the decode steps are recorded for `generated_attention`."""
        recorder = DecodeStepRecorder(self._attention_modules, self._image_columns(inputs), self.head_reduction)
        with capture_attention(self.model), recorder.recording():
            out = self.model.generate(
                **inputs,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                num_beams=1,  # greedy, whatever the checkpoint's generation config says
                cache_implementation="dynamic",  # the recorder reads the keys of a cache that grows with the answer
                return_dict_in_generate=True,
            )
        prompt_length = inputs["input_ids"].shape[1]
        answers, spans = zip(
            *(token_spans(self.processor.tokenizer, ids) for ids in out.sequences[:, prompt_length:].tolist())
        )
        return GeneratedAnswers(list(answers), list(spans), out.sequences, out.cache, recorder)

    @torch.no_grad()
    def generated_attention(
        self, inputs, generated: GeneratedAnswers, spans: Sequence[Sequence[tuple[int, int]]]
    ) -> list[list[torch.Tensor]]:
        """`answer_attention` of generated answers, from the rows recorded while generating. The last generated
        token was never fed back: when a span needs it, one more decode step (generate's own inputs for it) reads its
        row."""
        groups = [_token_groups(offsets, row_spans) for offsets, row_spans in zip(generated.token_spans, spans)]
        last = generated.sequences.shape[1] - inputs["input_ids"].shape[1] - 1
        if any(last in group for row in groups for group in row):
            answer_mask = torch.ones_like(generated.sequences[:, inputs["input_ids"].shape[1] :])
            step = self.model.prepare_inputs_for_generation(
                generated.sequences,
                next_sequence_length=1,
                cache=generated.cache,
                use_cache=True,
                is_first_iteration=False,
                **self._generation_kwargs(inputs, answer_mask),
            )
            with capture_attention(self.model), generated.recorder.recording():
                self.model(**step, logits_to_keep=1)
        rows = self._layer_mean(generated.recorder.rows())  # (batch, fed tokens, N): token t is row t
        identity = [range(rows.shape[1])] * len(groups)
        return self._span_rows(groups, rows, identity, inputs)

    @torch.no_grad()
    def answer_attention(
        self, inputs, answers: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]]
    ) -> list[list[torch.Tensor]]:
        """For each batch row, the image attention (cells of its grid, row-major) of every span of its given
        (teacher-forced) answer: the tokens overlapping the span (by character offsets), averaged over tokens, heads
        (`head_reduction`) and the chosen layers.

        One forward pass over prompt + answer with the capturing attention; returns [] for a span without tokens.
        """
        tokenizer = self.processor.tokenizer
        encoded = tokenizer(list(answers), add_special_tokens=False, return_offsets_mapping=True)
        prompt_ids = inputs["input_ids"]
        batch, prompt_len = prompt_ids.shape
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        answer_len = max(1, max(len(ids) for ids in encoded["input_ids"]))
        answer_ids = torch.full((batch, answer_len), pad_id, dtype=prompt_ids.dtype)
        answer_mask = torch.zeros((batch, answer_len), dtype=inputs["attention_mask"].dtype)
        for i, ids in enumerate(encoded["input_ids"]):
            answer_ids[i, : len(ids)] = torch.tensor(ids, dtype=prompt_ids.dtype)
            answer_mask[i, : len(ids)] = 1
        full = self.model.prepare_inputs_for_generation(
            torch.cat([prompt_ids, answer_ids.to(prompt_ids.device)], dim=1),
            use_cache=False,
            is_first_iteration=True,
            **self._generation_kwargs(inputs, answer_mask.to(prompt_ids.device)),
        )

        # which answer tokens spell each span; rows = their positions, padded with the last prompt position
        groups = [_token_groups(offsets, row_spans) for offsets, row_spans in zip(encoded["offset_mapping"], spans)]
        wanted = [sorted({t for group in row for t in group}) for row in groups]
        width = max(1, max(len(w) for w in wanted))
        rows = torch.full((batch, width), prompt_len - 1, dtype=torch.long)
        for i, tokens in enumerate(wanted):
            rows[i, : len(tokens)] = prompt_len + torch.tensor(tokens, dtype=torch.long)
        recorder = AttentionRowRecorder(
            self._attention_modules, rows.to(prompt_ids.device), self._image_columns(inputs), self.head_reduction
        )
        # the last logits only, as an index: an integer lets Gemma 4 feed its KV-shared layers the last token alone
        last = torch.tensor([full["input_ids"].shape[1] - 1], device=prompt_ids.device)
        with capture_attention(self.model), recorder.recording():
            self.model(**full, logits_to_keep=last)  # use_cache=False is in `full`
        index = [{t: r for r, t in enumerate(tokens)} for tokens in wanted]
        return self._span_rows(groups, self._layer_mean(recorder.maps), index, inputs)

    def _answers_and_attention(self, inputs, answers) -> tuple[list[str], list, list[list[torch.Tensor]]]:
        """(answers, parsed answers, span rows): generated (rows recorded while generating) unless given."""
        generated = None
        if answers is None:
            generated = self.generate_answers(inputs)
            answers = generated.answers
        parsed = [self.prompt.parse(answer) for answer in answers]
        spans = [p.foreground_spans + p.background_spans for p in parsed]
        if generated is None:
            return list(answers), parsed, self.answer_attention(inputs, answers, spans)
        return list(answers), parsed, self.generated_attention(inputs, generated, spans)

    # ------------------------------------------------------------------------------------------------- maps
    def _square_images(self, images):
        """LLaVA-1.5's padded squares and the images' boxes on them; other families see the images as they are."""
        if len(images) == 0:
            raise ValueError("No images: the extractor takes a non-empty list of PIL images.")
        wrong = [i for i, image in enumerate(images) if not isinstance(image, Image.Image)]
        if wrong:
            raise ValueError(
                f"The extractor takes a list of PIL images; image {wrong[0]} is a {type(images[wrong[0]]).__name__} "
                "(convert arrays with PIL.Image.fromarray)."
            )
        if not self.layout.pad_to_square:
            return list(images), [(0, 0, *image.size) for image in images]
        squares, boxes = zip(*(expand_to_square(image, self._pad_colour) for image in images))
        return list(squares), list(boxes)

    def _on_image(self, grid_map: torch.Tensor, box, square) -> torch.Tensor:
        """The map of the teacher's input cut back to the image (a no-op when the input was the image itself)."""
        return grid_map if tuple(box) == (0, 0, *square.size) else crop_interaction_map(grid_map, box, square.size)

    def _classification_status(self, parsed: ParsedAnswer, class_names: Sequence[str] | None) -> str:
        if parsed.status in VALID_STATUSES and self.prompt.needs_class_list and class_names:
            known = {normalise_word(name) for name in class_names}
            if any(normalise_word(word) not in known for word in parsed.foreground):
                return "foreground_not_in_classes"
        return parsed.status

    def __call__(
        self,
        images: Sequence[Image.Image],
        class_names: Sequence[str] | None = None,
        answers: Sequence[str] | None = None,
    ) -> list[TeacherInteraction]:
        """Classification maps (Eq. 11) of a batch of images. `answers` skips generation (teacher-forced answers)."""
        if self.prompt.task != "classification":
            raise ValueError(f"Prompt {self.prompt.name!r} is a {self.prompt.task} prompt: use `detect(...)`.")
        if answers is not None and len(answers) != len(images):
            raise ValueError(f"Got {len(answers)} answers for {len(images)} images.")
        squares, boxes = self._square_images(images)
        inputs = self._inputs(squares, [self.prompt.format(class_names)] * len(squares))
        answers, parsed, attention = self._answers_and_attention(inputs, answers)
        grids = self.layout.grids(inputs)

        results = []
        for answer, p, rows, box, square, grid in zip(answers, parsed, attention, boxes, squares, grids):
            status = self._classification_status(p, class_names)
            grid_map = torch.zeros(grid.rows, grid.cols)
            if status in (*VALID_STATUSES, "foreground_not_in_classes"):
                fore = [r for r in rows[: len(p.foreground_spans)] if len(r)]
                back = [r for r in rows[len(p.foreground_spans) :] if len(r)]
                if fore:
                    c_fore = torch.stack(fore).mean(0)
                    c_back = torch.stack(back).mean(0) if back else None
                    grid_map = contrast_map([c_fore], c_back).view(
                        grid.rows, grid.cols
                    )  # Eq. 11 on the teacher's input
                    grid_map = self._on_image(grid_map, box, square)  # ... cut back to the image
            valid = status in VALID_STATUSES or (
                status == "foreground_not_in_classes" and self.accept_unlisted_foreground
            )
            if valid and grid_map.sum() <= 0:
                status, valid = "empty_map", False
            results.append(
                TeacherInteraction(
                    grid_map.numpy().astype(np.float16), answer, p.foreground, p.background, status, valid
                )
            )
        return results

    @staticmethod
    def _no_targets(grid: ImageGrid) -> TeacherInteraction:
        return TeacherInteraction(np.zeros((grid.rows, grid.cols), np.float16), "", status="no_targets", valid=False)

    def detect(
        self,
        images: Sequence[Image.Image],
        boxes: Sequence[Sequence[Sequence[float]]],
        categories: Sequence[Sequence[str]],
        answers: Sequence[Sequence[str]] | None = None,
    ) -> list[TeacherInteraction]:
        """Detection maps (Eq. 12): one question per target category of each image, asked with that category's
        ground-truth boxes (COCO x, y, w, h) drawn on the image; C_VLM = relu(sum_k C_obj^(k) - C_back) / L1 with
        C_back averaged over the questions. `answers[i]` lists the answers for the sorted unique categories of image i.
        An answer that fails to parse (e.g. `"malformed_answer"`) marks its image's row invalid with that status and no
        map (its object would be missing from Eq. 12); a target the teacher says is absent adds nothing.
        """
        if self.prompt.task != "detection":
            raise ValueError(
                f"Prompt {self.prompt.name!r} is a {self.prompt.task} prompt: call the extractor directly."
            )
        if not len(images) == len(boxes) == len(categories):
            raise ValueError(f"Got {len(images)} images, {len(boxes)} box lists and {len(categories)} category lists.")
        questions, owners, prompted = [], [], []
        for i, (image, image_boxes, image_categories) in enumerate(zip(images, boxes, categories)):
            if len(image_boxes) != len(image_categories):
                raise ValueError(f"Image {i} has {len(image_boxes)} boxes but {len(image_categories)} categories.")
            not_names = [c for c in image_categories if not isinstance(c, str)]
            if not_names:
                raise ValueError(
                    f"Image {i}'s categories must be names (the question asks about them), got {not_names[:3]}: map the "
                    "ids to names first (DetectionInteractionMapFn does, with category_names)."
                )
            for target in sorted(set(image_categories)):
                target_boxes = [b for b, c in zip(image_boxes, image_categories) if c == target]
                prompted.append(draw_boxes(image, target_boxes))
                questions.append(self.prompt.format(target=target))
                owners.append(i)
        if not questions:  # the grid comes from the teacher's processor: ask it for the images' tokens
            grids = self.layout.grids(self._inputs(self._square_images(images)[0], ["?"] * len(images)))
            return [self._no_targets(grid) for grid in grids]
        flat_answers = None
        if answers is not None:
            flat_answers = [a for image_answers in answers for a in image_answers]
            if len(flat_answers) != len(questions):
                raise ValueError(f"Got {len(flat_answers)} answers for {len(questions)} (image, category) questions.")
        squares, square_boxes = self._square_images(prompted)
        inputs = self._inputs(squares, questions)
        flat_answers, parsed, attention = self._answers_and_attention(inputs, flat_answers)
        grids = self.layout.grids(inputs)

        results = []
        for i in range(len(images)):
            mine = [q for q, owner in enumerate(owners) if owner == i]
            if not mine:
                results.append(
                    self._no_targets(
                        self.layout.grids(self._inputs(self._square_images(images[i : i + 1])[0], ["?"]))[0]
                    )
                )
                continue
            shape = (grids[mine[0]].rows, grids[mine[0]].cols)  # every question of image i shares its image's grid
            objects, backgrounds = [], []
            for q in mine:
                p, rows = parsed[q], attention[q]
                fore = [r for r in rows[: len(p.foreground_spans)] if len(r)]
                back = [r for r in rows[len(p.foreground_spans) :] if len(r)]
                if p.status in VALID_STATUSES and fore:
                    objects.append(torch.stack(fore).mean(0).view(shape))
                    backgrounds += [torch.stack(back).mean(0).view(shape)] if back else []
            grid_map = torch.zeros(shape)
            status = "ok"
            # a question whose answer failed leaves its object out of Eq. 12: the row is marked, with no map
            failed = [parsed[q].status for q in mine if parsed[q].status not in (*VALID_STATUSES, "object_absent")]
            if failed:
                objects, status = [], failed[0]
            if objects:  # every question of image i shares its padded square, hence one crop box
                c_back = torch.stack(backgrounds).mean(0) if backgrounds else None
                grid_map = self._on_image(
                    contrast_map(objects, c_back), square_boxes[mine[0]], squares[mine[0]]
                )  # Eq. 12
                if grid_map.sum() <= 0:
                    status = "empty_map"
            elif status == "ok":
                status = next(
                    (parsed[q].status for q in mine if parsed[q].status not in VALID_STATUSES), "no_foreground"
                )
            results.append(
                TeacherInteraction(
                    grid_map.numpy().astype(np.float16),
                    " | ".join(flat_answers[q] for q in mine),
                    [w for q in mine for w in parsed[q].foreground],
                    [w for q in mine for w in parsed[q].background],
                    status,
                    status == "ok",
                )
            )
        return results


__all__ = [
    "CAPTURE_ATTENTION",
    "CAPTURE_EAGER_ATTENTION",
    "HEAD_REDUCTIONS",
    "AttentionRowRecorder",
    "DecodeStepRecorder",
    "GeneratedAnswers",
    "InteractionExtractor",
    "TeacherInteraction",
    "answer_row_attention",
    "capture_attention",
    "capture_attention_forward",
    "capture_eager_attention_forward",
    "draw_boxes",
    "expand_to_square",
    "token_spans",
]
