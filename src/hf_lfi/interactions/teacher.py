"""The teacher: interaction maps C_VLM from a VLM's answer (paper section 2, Eq. 10-12).

Any `AutoModelForImageTextToText` family with an image-token layout adapter (`layouts.py`: LLaVA-1.5, LLaVA-NeXT,
LLaVA-OneVision, Qwen2-VL, Qwen2.5-VL, PaliGemma, Gemma 3, Idefics3, SmolVLM). `InteractionExtractor` asks a named
VQA prompt (`prompts.py`) about each image, generates the answer greedily
(batched, left padded), parses it into foreground and background words, then runs ONE forward pass over prompt +
answer in which the attention function `"lfi_capture"` (registered with `transformers.AttentionInterface`) runs SDPA
for the outputs and additionally computes, for the selected answer tokens only, their softmax attention rows
against the image tokens (causal and padding masks applied, grouped-query heads repeated). The full attention
matrix is never materialised and `output_attentions` is never used.

Aggregation (documented defaults): the rows are averaged over heads (`head_reduction="mean"`) and over all text
layers (`layers=None`); the tokens of one word are averaged, then the words of the foreground (resp. background).
The forward pass sees exactly what `generate()` saw, built by generate's own steps (`_full_inputs`): every processor
output (`pixel_values`, `image_sizes`, `image_grid_thw`, `token_type_ids`, `mm_token_type_ids`, ...), per-token
tensors extended over the answer as decoding extends them, and the positions generate computes (left padding,
Qwen's M-RoPE, PaliGemma's 1-based ones). Softcapped attention logits (Gemma-2, PaliGemma-2) are refused.

LLaVA-1.5 images are padded to a square with the processor's mean colour first (its own `pad` preprocessing, so
nothing is cropped away) and the map is cut back to the image's area; other families use their processor's
preprocessing. Maps live on the family's grid (24 x 24 for LLaVA-1.5, any (rows, cols) for Qwen2-VL), covering the
whole image like the student's resized input.
"""

import contextvars
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image, ImageDraw
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from .layouts import ImageGrid, image_token_layout
from .maps import contrast_map, crop_interaction_map
from .processor_match import check_processor_matches
from .prompts import ParsedAnswer, PromptTemplate, get_prompt, normalise_word

CAPTURE_ATTENTION = "lfi_capture"
HEAD_REDUCTIONS = ("mean", "max")
VALID_STATUSES = ("ok", "no_background")
_ACTIVE_RECORDER: contextvars.ContextVar = contextvars.ContextVar("hf_lfi_attention_recorder", default=None)


def answer_row_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    attention_mask: torch.Tensor | None,
    rows: torch.Tensor,
    columns: torch.Tensor,
    scaling: float,
) -> torch.Tensor:
    """softmax(q_rows k^T * scaling + mask) restricted to `columns`: (batch, heads, R, N), in float32.

    Args:
        query: (batch, heads, Q, d); key: (batch, kv_heads, K, d), repeated to `heads` for grouped-query attention.
        attention_mask: None (causal, no padding), a boolean (True = attend) or an additive float mask,
            broadcastable to (batch, 1 or heads, Q, K).
        rows: (batch, R) query positions; columns: (batch, N) key positions (the image tokens).
    """
    batch, heads, q_len, dim = query.shape
    k_len = key.shape[2]
    key = repeat_kv(key, heads // key.shape[1])
    selected = query.gather(2, rows[:, None, :, None].expand(batch, heads, rows.shape[1], dim))
    scores = (selected.float() @ key.float().transpose(-1, -2)) * scaling  # (batch, heads, R, K)
    if attention_mask is None:
        causal = torch.arange(k_len, device=rows.device) <= (rows + k_len - q_len)[..., None]
        scores = scores.masked_fill(~causal[:, None], float("-inf"))
    else:
        mask = attention_mask.expand(batch, -1, q_len, k_len)
        mask = mask.gather(2, rows[:, None, :, None].expand(batch, mask.shape[1], rows.shape[1], k_len))
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask.float()
    probabilities = scores.softmax(dim=-1)
    return probabilities.gather(3, columns[:, None, None, :].expand(batch, heads, rows.shape[1], columns.shape[1]))


class AttentionRowRecorder:
    """Collects `answer_row_attention` of chosen attention modules during one forward pass (see `recording`)."""

    def __init__(
        self, modules: dict[int, int], rows: torch.Tensor, columns: torch.Tensor, head_reduction: str = "mean"
    ):
        if head_reduction not in HEAD_REDUCTIONS:
            raise ValueError(f"head_reduction must be one of {HEAD_REDUCTIONS}, got {head_reduction!r}.")
        self.modules = modules  # id(attention module) -> layer index
        self.rows = rows
        self.columns = columns
        self.head_reduction = head_reduction
        self.maps: dict[int, torch.Tensor] = {}  # layer -> (batch, R, N)

    def record(self, module, query, key, attention_mask, scaling) -> None:
        rows = answer_row_attention(query, key, attention_mask, self.rows, self.columns, scaling)
        self.maps[self.modules[id(module)]] = rows.mean(1) if self.head_reduction == "mean" else rows.amax(1)

    @contextmanager
    def recording(self):
        token = _ACTIVE_RECORDER.set(self)
        try:
            yield self
        finally:
            _ACTIVE_RECORDER.reset(token)


def capture_attention_forward(module, query, key, value, attention_mask, **kwargs):
    """SDPA, plus the answer rows for the active `AttentionRowRecorder` when `module` is one it watches."""
    recorder = _ACTIVE_RECORDER.get()
    if recorder is not None and id(module) in recorder.modules:
        scaling = kwargs.get("scaling") or module.head_dim**-0.5
        recorder.record(module, query, key, attention_mask, scaling)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


AttentionInterface.register(CAPTURE_ATTENTION, capture_attention_forward)
# without a registered mask function the models build no mask at all for a custom attention (padding ignored)
AttentionMaskInterface.register(CAPTURE_ATTENTION, sdpa_mask)


def _text_config_name(model) -> str:
    text_config = model.config.get_text_config()
    return next((name for name in model.config.sub_configs if getattr(model.config, name, None) is text_config), "")


@contextmanager
def capture_attention(model):
    """Temporarily switch `model`'s text model to the capturing attention (the vision tower keeps its own, which
    some towers special-case); restore it afterwards."""
    name = _text_config_name(model)
    config = getattr(model.config, name) if name else model.config
    previous = config._attn_implementation
    model.set_attn_implementation({name: CAPTURE_ATTENTION} if name else CAPTURE_ATTENTION)
    try:
        yield
    finally:
        model.set_attn_implementation({name: previous} if name else previous)


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
        softcap = getattr(model.config.get_text_config(), "attn_logit_softcapping", None)
        if softcap:
            raise ValueError(
                f"{type(model).__name__} softcaps its attention logits (attn_logit_softcapping={softcap}, e.g. Gemma-2 in "
                "PaliGemma-2): its attention rows cannot be captured beside SDPA. Use a teacher without softcapping."
            )
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

    @torch.no_grad()
    def generate_answers(self, inputs) -> list[str]:
        """Greedy answers of the batch (left padded), special tokens removed."""
        generated = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        answers = self.processor.tokenizer.batch_decode(
            generated[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True
        )
        return [answer.strip() for answer in answers]

    # -------------------------------------------------------------------------------------- answer attention
    def _full_inputs(self, inputs, answer_ids: torch.Tensor, answer_mask: torch.Tensor) -> dict:
        """The model inputs of prompt + answer, built by `generate()`'s own steps: the prompt's positions
        (`_prepare_position_ids_for_generation`: left padding, M-RoPE), every per-token input extended over the
        answer as decoding extends it (`_update_model_kwargs_for_generation`: PaliGemma's causal suffix
        `token_type_ids`, text `mm_token_type_ids`, positions), then `prepare_inputs_for_generation` (PaliGemma's
        1-based positions, the processor outputs forwarded to the prefill)."""
        model = self.model
        kwargs = dict(inputs)
        kwargs["position_ids"] = model._prepare_position_ids_for_generation(inputs["input_ids"], dict(inputs))
        kwargs = model._update_model_kwargs_for_generation({}, kwargs, num_new_tokens=answer_ids.shape[1])
        kwargs.pop("input_ids")
        kwargs["attention_mask"] = torch.cat([inputs["attention_mask"], answer_mask], dim=1)
        input_ids = torch.cat([inputs["input_ids"], answer_ids], dim=1)
        return model.prepare_inputs_for_generation(input_ids, use_cache=False, is_first_iteration=True, **kwargs)

    @torch.no_grad()
    def answer_attention(
        self, inputs, answers: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]]
    ) -> list[list[torch.Tensor]]:
        """For each batch row, the image attention (cells of its grid, row-major) of every span of its answer: the
        tokens overlapping the span (by character offsets), averaged over tokens, heads (`head_reduction`) and the
        chosen layers.

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
        full = self._full_inputs(inputs, answer_ids.to(prompt_ids.device), answer_mask.to(prompt_ids.device))

        # which answer tokens spell each span; rows = their positions, padded with the last prompt position
        token_groups = []
        for offsets, row_spans in zip(encoded["offset_mapping"], spans):
            token_groups.append(
                [
                    [t for t, (a, b) in enumerate(offsets) if a < end and b > start and b > a]
                    for start, end in row_spans
                ]
            )
        wanted = [sorted({t for group in groups for t in group}) for groups in token_groups]
        width = max(1, max(len(w) for w in wanted))
        rows = torch.full((batch, width), prompt_len - 1, dtype=torch.long)
        for i, tokens in enumerate(wanted):
            rows[i, : len(tokens)] = prompt_len + torch.tensor(tokens, dtype=torch.long)
        grids = self.layout.grids(inputs)
        cells = max(len(grid.positions) for grid in grids)
        columns = torch.zeros((batch, cells), dtype=torch.long, device=prompt_ids.device)
        for i, grid in enumerate(grids):
            columns[i, : len(grid.positions)] = grid.positions

        recorder = AttentionRowRecorder(
            self._attention_modules, rows.to(prompt_ids.device), columns, self.head_reduction
        )
        with capture_attention(self.model), recorder.recording():
            self.model(**full, logits_to_keep=1)  # use_cache=False is in `full`
        layer_mean = torch.stack([recorder.maps[i] for i in self.layers]).mean(0).float().cpu()  # (batch, R, cells)

        results = []
        for i, groups in enumerate(token_groups):
            index = {t: r for r, t in enumerate(wanted[i])}
            n = len(grids[i].positions)
            results.append([layer_mean[i, [index[t] for t in group], :n].mean(0) if group else [] for group in groups])
        return results

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
        squares, boxes = self._square_images(images)
        inputs = self._inputs(squares, [self.prompt.format(class_names)] * len(squares))
        if answers is None:
            answers = self.generate_answers(inputs)
        elif len(answers) != len(images):
            raise ValueError(f"Got {len(answers)} answers for {len(images)} images.")
        parsed = [self.prompt.parse(answer) for answer in answers]
        spans = [p.foreground_spans + p.background_spans for p in parsed]
        attention = self.answer_attention(inputs, answers, spans)
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
        squares, square_boxes = self._square_images(prompted)
        inputs = self._inputs(squares, questions)
        if answers is None:
            flat_answers = self.generate_answers(inputs)
        else:
            flat_answers = [a for image_answers in answers for a in image_answers]
            if len(flat_answers) != len(questions):
                raise ValueError(f"Got {len(flat_answers)} answers for {len(questions)} (image, category) questions.")
        parsed = [self.prompt.parse(answer) for answer in flat_answers]
        attention = self.answer_attention(
            inputs, flat_answers, [p.foreground_spans + p.background_spans for p in parsed]
        )
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
    "HEAD_REDUCTIONS",
    "AttentionRowRecorder",
    "InteractionExtractor",
    "TeacherInteraction",
    "answer_row_attention",
    "capture_attention",
    "capture_attention_forward",
    "draw_boxes",
    "expand_to_square",
]
