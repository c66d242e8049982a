"""Tiny random teachers of every supported VLM family, built from the installed transformers' configs and local
processors (a byte-level BPE tokenizer trained on the prompt vocabulary with the family's special tokens, the
family's image processor at a tiny size). No downloads. `tiny_vlm(family)` -> (model, processor);
`forced_answers(model, tokenizer, answers)` makes `generate` emit known answers."""

import sys
from contextlib import contextmanager

import torch
from tiny_llava import CORPUS_EXTRA, tiny_llava
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LogitsProcessor, PreTrainedTokenizerFast

from hf_lfi.interactions.prompts import PROMPTS

USER_TEMPLATE = (
    "{% for message in messages %}{{ '<|user|>' }}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}IMAGE{% else %}{{ item['text'] }}{% endif %}{% endfor %}{{ '<|end|>' }}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def family_tokenizer(special_tokens: list[str], **named) -> PreTrainedTokenizerFast:
    """A BPE tokenizer over the prompts, with `special_tokens` (and `<|user|>` `<|end|>` `<|assistant|>`)."""
    specials = ["<unk>", "<s>", "</s>", "<pad>", "<|user|>", "<|end|>", "<|assistant|>", *special_tokens]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=420, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator([p.question for p in PROMPTS.values()] + CORPUS_EXTRA, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_special_tokens=named,
    )


TEXT_SIZES = {  # the tests' tiny text models; "mid" and "real" (Qwen2-1.5B's shape) for benchmarks/bench_teacher.py
    "tiny": dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
    ),
    "mid": dict(
        hidden_size=512,
        intermediate_size=1024,
        num_hidden_layers=6,
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=64,
    ),
    "real": dict(
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        head_dim=128,
    ),
}


def _text(tokenizer, size: str, **overrides) -> dict:
    values = dict(
        vocab_size=len(tokenizer),
        max_position_embeddings=4096,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **TEXT_SIZES[size],
    )
    values.update(overrides)
    return values


def _siglip(image_size: int, patch_size: int = 8):
    from transformers import SiglipVisionConfig

    return SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=patch_size,
    )


def tiny_llava_next(image_size: int = 32, patch_size: int = 8, size: str = "tiny"):
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextProcessor,
    )
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    tokenizer = family_tokenizer(["<image>"], image_token="<image>")
    pinpoints = [[image_size, 2 * image_size], [2 * image_size, image_size], [2 * image_size, 2 * image_size]]
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_grid_pinpoints=pinpoints,
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=USER_TEMPLATE.replace("IMAGE", "<image>\n"),
    )
    config = LlavaNextConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=image_size,
            patch_size=patch_size,
        ),
        text_config=LlamaConfig(**_text(tokenizer, size)),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    return LlavaNextForConditionalGeneration(config).eval(), processor


def tiny_llava_onevision(image_size: int = 32, patch_size: int = 8, size: str = "tiny"):
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionProcessor,
        Qwen2Config,
    )
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )

    tokenizer = family_tokenizer(["<image>", "<video>"], image_token="<image>", video_token="<video>")
    pinpoints = [[image_size, 2 * image_size], [2 * image_size, image_size], [2 * image_size, 2 * image_size]]
    image_processor = LlavaOnevisionImageProcessorPil(
        size={"height": image_size, "width": image_size}, image_grid_pinpoints=pinpoints
    )
    processor = _images_only(LlavaOnevisionProcessor)(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=None,
        num_image_tokens=(image_size // patch_size) ** 2,
        vision_feature_select_strategy="full",
        chat_template=USER_TEMPLATE.replace("IMAGE", "<image>\n"),
    )
    config = LlavaOnevisionConfig(
        vision_config=_siglip(image_size, patch_size),
        text_config=Qwen2Config(**_text(tokenizer, size)),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_id=tokenizer.convert_tokens_to_ids("<video>"),
        image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
    )
    return LlavaOnevisionForConditionalGeneration(config).eval(), processor


def _images_only(processor_class):
    """`processor_class` without its video processor (the test machine has no torchvision, which video processors
    need) and audio feature extractor: the image path uses neither."""

    class ImagesOnly(processor_class):
        def check_argument_for_proper_class(self, argument_name, argument):
            if argument_name not in ("video_processor", "feature_extractor"):
                super().check_argument_for_proper_class(argument_name, argument)

    return ImagesOnly


def _qwen_processor(processor_class, patch_size: int, merge: int, size: str):
    """(tokenizer, processor, special token ids) of the Qwen-VL families: 4 to 36 merged patches an image, about
    256 (a 448 x 448 image's) at the "real" size, whatever its size."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    specials = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    tokenizer = family_tokenizer(specials, image_token="<|image_pad|>", video_token="<|video_pad|>")
    factor = patch_size * merge
    tokens = (256, 256) if size == "real" else (4, 36)
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=patch_size,
        merge_size=merge,
        temporal_patch_size=2,
        min_pixels=tokens[0] * factor**2,
        max_pixels=tokens[1] * factor**2,
    )
    processor = _images_only(processor_class)(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=None,
        chat_template=USER_TEMPLATE.replace("IMAGE", "<|vision_start|><|image_pad|><|vision_end|>"),
    )
    names = ("vision_start_token_id", "vision_end_token_id", "image_token_id", "video_token_id")
    return tokenizer, processor, {name: tokenizer.convert_tokens_to_ids(token) for name, token in zip(names, specials)}


def tiny_qwen2_vl(version: str = "2", patch_size: int = 4, merge: int = 2, size: str = "tiny"):
    """Qwen2-VL / Qwen2.5-VL; 14-pixel patches at the "real" size."""
    from transformers import Qwen2VLProcessor

    patch_size = 14 if size == "real" else patch_size
    tokenizer, processor, ids = _qwen_processor(Qwen2VLProcessor, patch_size, merge, size)
    factor = patch_size * merge
    half = TEXT_SIZES[size]["head_dim"] // 2  # M-RoPE splits the rotary half of a head into (t, h, w) sections
    sections = [half // 4, half // 4, half - 2 * (half // 4)]
    text = _text(
        tokenizer, size, rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": sections}
    )
    width = TEXT_SIZES[size]["hidden_size"]  # the merger projects onto the text width
    vision = dict(
        depth=2,
        embed_dim=32,
        hidden_size=width,
        num_heads=4,
        patch_size=patch_size,
        spatial_merge_size=merge,
        temporal_patch_size=2,
    )
    if version == "2":
        from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

        config = Qwen2VLConfig(text_config=text, vision_config=vision, **ids)
        return Qwen2VLForConditionalGeneration(config).eval(), processor
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    vision = {
        **vision,
        "hidden_size": 32,
        "intermediate_size": 48,
        "out_hidden_size": width,
        "window_size": 2 * factor,
        "fullatt_block_indexes": [1],
    }
    vision.pop("embed_dim")
    config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids)
    return Qwen2_5_VLForConditionalGeneration(config).eval(), processor


def tiny_qwen3_vl(patch_size: int = 4, merge: int = 2, size: str = "tiny"):
    """Qwen3-VL: Qwen2-VL's image processor and token layout, interleaved M-RoPE, deepstack visual features."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor

    tokenizer, processor, ids = _qwen_processor(Qwen3VLProcessor, patch_size, merge, size)
    half = TEXT_SIZES[size]["head_dim"] // 2
    sections = [half - 2 * (half // 3), half // 3, half // 3]
    text = _text(
        tokenizer,
        size,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": sections},
    )
    vision = dict(
        depth=2,
        hidden_size=32,
        intermediate_size=48,
        num_heads=4,
        patch_size=patch_size,
        spatial_merge_size=merge,
        temporal_patch_size=2,
        out_hidden_size=TEXT_SIZES[size]["hidden_size"],
        num_position_embeddings=64,
        deepstack_visual_indexes=[0],
    )
    config = Qwen3VLConfig(text_config=text, vision_config=vision, **ids)
    return Qwen3VLForConditionalGeneration(config).eval(), processor


def tiny_glm4v(patch_size: int = 4, merge: int = 2, size: str = "tiny"):
    """GLM-4.1V / 4.5V: Qwen2-VL's merged patch grid and M-RoPE on half of each head (partial rotary)."""
    from transformers import Glm4vConfig, Glm4vForConditionalGeneration, Glm4vProcessor
    from transformers.models.glm4v.image_processing_pil_glm4v import Glm4vImageProcessorPil

    specials = ["<|begin_of_image|>", "<|end_of_image|>", "<|image|>", "<|begin_of_video|>", "<|end_of_video|>"]
    tokenizer = family_tokenizer([*specials, "<|video|>"], image_token="<|image|>", video_token="<|video|>")
    factor = patch_size * merge
    image_processor = Glm4vImageProcessorPil(
        size={"shortest_edge": 4 * factor**2, "longest_edge": 36 * factor**2},
        patch_size=patch_size,
        merge_size=merge,
        temporal_patch_size=2,
    )
    processor = _images_only(Glm4vProcessor)(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=None,
        chat_template=USER_TEMPLATE.replace("IMAGE", "<|begin_of_image|><|image|><|end_of_image|>"),
    )
    ids = {
        name: tokenizer.convert_tokens_to_ids(token)
        for name, token in zip(
            (
                "image_start_token_id",
                "image_end_token_id",
                "image_token_id",
                "video_start_token_id",
                "video_end_token_id",
            ),
            specials,
        )
    }
    half = TEXT_SIZES[size]["head_dim"] // 4  # the rotary quarter of a head: half of it rotates
    sections = [half // 4, (half - half // 4) // 2, half - half // 4 - (half - half // 4) // 2]
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": sections, "partial_rotary_factor": 0.5}
    text = {key: value for key, value in _text(tokenizer, size, rope_parameters=rope).items() if key != "head_dim"}
    vision = dict(
        depth=2,
        hidden_size=32,
        intermediate_size=48,
        num_heads=4,
        image_size=factor * 6,
        patch_size=patch_size,
        spatial_merge_size=merge,
        temporal_patch_size=2,
        out_hidden_size=TEXT_SIZES[size]["hidden_size"],
    )
    config = Glm4vConfig(
        text_config=text, vision_config=vision, video_token_id=tokenizer.convert_tokens_to_ids("<|video|>"), **ids
    )
    return Glm4vForConditionalGeneration(config).eval(), processor


def tiny_paligemma(image_size: int = 32, patch_size: int = 8, size: str = "tiny", version: str = "1"):
    """PaliGemma; version "2": PaliGemma-2's Gemma-2 text model, whose attention logits are softcapped (at 1, near
    the logits of a random tiny model; Gemma-2 uses 50)."""
    from transformers import (
        Gemma2Config,
        GemmaConfig,
        PaliGemmaConfig,
        PaliGemmaForConditionalGeneration,
        PaliGemmaProcessor,
        SiglipImageProcessor,
    )

    tokenizer = family_tokenizer(["<image>"], image_token="<image>")
    image_processor = SiglipImageProcessor(size={"height": image_size, "width": image_size})
    image_processor.image_seq_length = (image_size // patch_size) ** 2
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)
    if version == "1":
        text = GemmaConfig(**_text(tokenizer, size))
    else:
        layers = TEXT_SIZES[size]["num_hidden_layers"]
        text = Gemma2Config(
            **_text(
                tokenizer,
                size,
                attn_logit_softcapping=1.0,
                final_logit_softcapping=30.0,
                query_pre_attn_scalar=TEXT_SIZES[size]["head_dim"],
                sliding_window=512,
                layer_types=["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(layers)],
            )
        )
    config = PaliGemmaConfig(
        vision_config=_siglip(image_size, patch_size),
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        projection_dim=TEXT_SIZES[size]["hidden_size"],
    )
    config.vision_config.projection_dim = TEXT_SIZES[size]["hidden_size"]  # the projector maps onto the text width
    return PaliGemmaForConditionalGeneration(config).eval(), processor


def tiny_gemma3(image_size: int = 32, patch_size: int = 4, tokens_per_image: int = 16, size: str = "tiny"):
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3Processor, Gemma3TextConfig
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    tokenizer = family_tokenizer(
        ["<start_of_image>", "<end_of_image>", "<image_soft_token>"],
        boi_token="<start_of_image>",
        eoi_token="<end_of_image>",
        image_token="<image_soft_token>",
    )
    image_processor = Gemma3ImageProcessorPil(size={"height": image_size, "width": image_size})
    processor = Gemma3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_length=tokens_per_image,
        chat_template=USER_TEMPLATE.replace("IMAGE", "<start_of_image>"),
    )
    layers = TEXT_SIZES[size]["num_hidden_layers"]
    text = _text(
        tokenizer,
        size,
        sliding_window=512,
        query_pre_attn_scalar=TEXT_SIZES[size]["head_dim"],
        layer_types=["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(layers)],
    )
    config = Gemma3Config(
        text_config=Gemma3TextConfig(**text),
        vision_config=_siglip(image_size, patch_size),
        mm_tokens_per_image=tokens_per_image,
        boi_token_id=tokenizer.convert_tokens_to_ids("<start_of_image>"),
        eoi_token_id=tokenizer.convert_tokens_to_ids("<end_of_image>"),
        image_token_id=tokenizer.convert_tokens_to_ids("<image_soft_token>"),
    )
    return Gemma3ForConditionalGeneration(config).eval(), processor


def tiny_gemma4(patch_size: int = 4, pooling: int = 3, size: str = "tiny"):
    """Gemma 4: aspect-preserving resize to at most 70 soft tokens, each the average of pooling x pooling patches;
    sliding and full layers of different head sizes, per-layer embeddings, keys and values shared by the last layer."""
    from transformers import Gemma4Config, Gemma4ForConditionalGeneration, Gemma4Processor
    from transformers.models.gemma4.image_processing_pil_gemma4 import Gemma4ImageProcessorPil

    tokenizer = family_tokenizer(
        ["<|image>", "<image|>", "<|image|>", "<|audio>", "<audio|>", "<|audio|>"],
        boi_token="<|image>",
        eoi_token="<image|>",
        image_token="<|image|>",
        boa_token="<|audio>",
        eoa_token="<audio|>",
        audio_token="<|audio|>",
    )
    image_processor = Gemma4ImageProcessorPil(patch_size=patch_size, max_soft_tokens=70, pooling_kernel_size=pooling)
    processor = _images_only(Gemma4Processor)(
        feature_extractor=None,
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=None,
        chat_template=USER_TEMPLATE.replace("IMAGE", "<|image|>"),
        image_seq_length=70,
    )
    layers = max(4, TEXT_SIZES[size]["num_hidden_layers"])  # the two shared layers read a sliding and a full one
    text = _text(
        tokenizer,
        size,
        num_hidden_layers=layers,
        sliding_window=512,
        layer_types=["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(layers)],
        global_head_dim=2 * TEXT_SIZES[size]["head_dim"],
        vocab_size_per_layer_input=len(tokenizer),
        hidden_size_per_layer_input=8,
        num_kv_shared_layers=2,
    )
    vision = dict(
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        head_dim=8,
        patch_size=patch_size,
        pooling_kernel_size=pooling,
        position_embedding_size=256,
    )
    config = Gemma4Config(
        text_config=text,
        vision_config=vision,
        audio_config=None,
        boi_token_id=tokenizer.convert_tokens_to_ids("<|image>"),
        eoi_token_id=tokenizer.convert_tokens_to_ids("<image|>"),
        image_token_id=tokenizer.convert_tokens_to_ids("<|image|>"),
        video_token_id=tokenizer.convert_tokens_to_ids("<|video|>"),
        boa_token_id=tokenizer.convert_tokens_to_ids("<|audio>"),
        eoa_token_index=tokenizer.convert_tokens_to_ids("<audio|>"),
        audio_token_id=tokenizer.convert_tokens_to_ids("<|audio|>"),
    )
    return Gemma4ForConditionalGeneration(config).eval(), processor


def tiny_idefics3(
    family: str = "idefics3", image_size: int = 32, patch_size: int = 4, scale_factor: int = 2, size: str = "tiny"
):
    """Idefics3 / SmolVLM: images split into up to 2 x 2 tiles of `image_size` plus the global image. SmolVLM's
    model reads Idefics3's processor output (the same tiles + global layout): its own processor needs `num2words`."""
    from transformers import Idefics3Processor as Processor
    from transformers import LlamaConfig
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil as ImageProcessor

    if family == "idefics3":
        from transformers import Idefics3Config as Config
        from transformers import Idefics3ForConditionalGeneration as Model
        from transformers import Idefics3VisionConfig as VisionConfig
    else:
        from transformers import SmolVLMConfig as Config
        from transformers import SmolVLMForConditionalGeneration as Model
        from transformers import SmolVLMVisionConfig as VisionConfig
    tiles = [f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)]
    tokenizer = family_tokenizer(
        ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>", *tiles], image_token="<image>"
    )
    image_processor = ImageProcessor(
        size={"longest_edge": 2 * image_size}, max_image_size={"longest_edge": image_size}, do_image_splitting=True
    )
    seq_len = (image_size // patch_size) ** 2 // scale_factor**2
    processor = Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=seq_len,
        chat_template=USER_TEMPLATE.replace("IMAGE", "<image>"),
    )
    config = Config(
        vision_config=VisionConfig(
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=image_size,
            patch_size=patch_size,
        ),
        text_config=LlamaConfig(**_text(tokenizer, size)),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        scale_factor=scale_factor,
        pad_token_id=tokenizer.pad_token_id,
    )
    return Model(config).eval(), processor


def tiny_internvl(image_size: int = 32, patch_size: int = 4, size: str = "tiny"):
    """InternVL: images cropped into up to 2 x 2 tiles of `image_size` plus a thumbnail of the whole image (last),
    each (image_size / patch_size / 2)^2 tokens after pixel shuffle; a Qwen2 text model."""
    from transformers import InternVLConfig, InternVLForConditionalGeneration, InternVLProcessor, Qwen2Config
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

    tokenizer = family_tokenizer(
        ["<img>", "</img>", "<IMG_CONTEXT>", "<video>"],
        start_image_token="<img>",
        end_image_token="</img>",
        context_image_token="<IMG_CONTEXT>",
        video_token="<video>",
    )
    image_processor = GotOcr2ImageProcessorPil(
        size={"height": image_size, "width": image_size}, crop_to_patches=True, min_patches=1, max_patches=4
    )
    tokens_per_tile = (image_size // patch_size // 2) ** 2
    processor = _images_only(InternVLProcessor)(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=None,
        image_seq_length=tokens_per_tile,
        chat_template=USER_TEMPLATE.replace("IMAGE", "<IMG_CONTEXT>\n"),
    )
    config = InternVLConfig(
        vision_config=dict(
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=[image_size, image_size],
            patch_size=[patch_size, patch_size],
        ),
        text_config=Qwen2Config(**_text(tokenizer, size)),
        image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"),
        image_seq_length=tokens_per_tile,
        downsample_ratio=0.5,
    )
    return InternVLForConditionalGeneration(config).eval(), processor


def tiny_mistral3(longest_edge: int = 48, patch_size: int = 4, merge: int = 2, size: str = "tiny"):
    """Mistral 3 (Pixtral vision): the image resized to at most `longest_edge` in whole merged patches, any aspect
    ratio; a row of [IMG] tokens per row of merged patches, each row closed by [IMG_BREAK] (the last by [IMG_END])."""
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration, MistralConfig, PixtralVisionConfig
    from transformers.models.pixtral import image_processing_pil_pixtral
    from transformers.utils import is_torchvision_available

    if not is_torchvision_available():  # the processor's module imports a helper from the torchvision image
        # processor's module; the PIL one's module defines the same helper (only used to count tokens ahead)
        sys.modules.setdefault("transformers.models.pixtral.image_processing_pixtral", image_processing_pil_pixtral)
    from transformers.models.pixtral.processing_pixtral import PixtralProcessor

    tokenizer = family_tokenizer(["[IMG]", "[IMG_BREAK]", "[IMG_END]"], image_token="[IMG]")
    image_processor = image_processing_pil_pixtral.PixtralImageProcessorPil(
        size={"longest_edge": longest_edge}, patch_size=patch_size
    )
    processor = PixtralProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        spatial_merge_size=merge,
        chat_template=USER_TEMPLATE.replace("IMAGE", "[IMG]"),
    )
    config = Mistral3Config(
        vision_config=PixtralVisionConfig(
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            head_dim=8,
            image_size=longest_edge,
            patch_size=patch_size,
        ),
        text_config=MistralConfig(**_text(tokenizer, size)),
        image_token_index=tokenizer.convert_tokens_to_ids("[IMG]"),
        spatial_merge_size=merge,
    )
    return Mistral3ForConditionalGeneration(config).eval(), processor


def _llava(size: str = "tiny"):
    """LLaVA-1.5; at the "real" size with its 336-pixel, 14-pixel-patch grid (576 image tokens)."""
    text = TEXT_SIZES[size]
    grid = dict(image_size=336, patch_size=14) if size == "real" else {}
    return tiny_llava(
        text_hidden_size=text["hidden_size"],
        text_intermediate_size=text["intermediate_size"],
        text_layers=text["num_hidden_layers"],
        text_heads=text["num_attention_heads"],
        num_key_value_heads=text["num_key_value_heads"],
        **grid,
    )


FAMILIES = {
    "llava": _llava,
    "llava_next": tiny_llava_next,
    "llava_onevision": tiny_llava_onevision,
    "mistral3": tiny_mistral3,
    "qwen2_vl": tiny_qwen2_vl,
    "qwen2_5_vl": lambda size="tiny": tiny_qwen2_vl("2.5", size=size),
    "qwen3_vl": tiny_qwen3_vl,
    "paligemma": tiny_paligemma,
    "paligemma2": lambda size="tiny": tiny_paligemma(size=size, version="2"),
    "gemma3": tiny_gemma3,
    "gemma4": tiny_gemma4,
    "glm4v": tiny_glm4v,
    "idefics3": tiny_idefics3,
    "internvl": tiny_internvl,
    "smolvlm": lambda size="tiny": tiny_idefics3("smolvlm", size=size),
}


def tiny_vlm(family: str, seed: int = 0, size: str = "tiny"):
    """(model, processor) of `family` with a `TEXT_SIZES[size]` text model, seeded."""
    torch.manual_seed(seed)
    model, processor = FAMILIES[family](size=size)
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    return model, processor


class ForceTokens(LogitsProcessor):
    """Greedy generation that emits `rows[i]` for batch row i, then EOS: teacher forcing through `generate()`."""

    def __init__(self, rows: list[list[int]], prompt_length: int, eos_token_id: int):
        self.rows, self.prompt_length, self.eos = rows, prompt_length, eos_token_id

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1] - self.prompt_length
        forced = torch.tensor([row[step] if step < len(row) else self.eos for row in self.rows])
        return torch.full_like(scores, float("-inf")).scatter_(1, forced[:, None].to(scores.device), 0.0)


@contextmanager
def forced_answers(model, tokenizer, answers: list[str]):
    """Within the block, `model.generate` emits the tokens of `answers` (row i of a batch: answers[i % len]), then
    EOS, whatever the model predicts: the generation path with known answers."""
    original = model.generate
    ids = tokenizer(list(answers), add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id

    def generate(**kwargs):
        rows = [ids[i % len(ids)] for i in range(kwargs["input_ids"].shape[0])]
        forcing = ForceTokens(rows, kwargs["input_ids"].shape[1], eos)
        return original(**kwargs, logits_processor=[forcing], eos_token_id=eos)

    model.generate = generate
    try:
        yield ids
    finally:
        del model.generate
