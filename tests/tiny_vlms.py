"""Tiny random teachers of every supported VLM family, built from the installed transformers' configs and local
processors (a byte-level BPE tokenizer trained on the prompt vocabulary with the family's special tokens, the
family's image processor at a tiny size). No downloads. `tiny_vlm(family)` -> (model, processor)."""

import torch
from tiny_llava import CORPUS_EXTRA, tiny_llava
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

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


TEXT_SIZES = {  # the tests' tiny text models; "mid" for benchmarks/bench_teacher.py
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
    """`processor_class` without its video processor: the test machine has no torchvision, which video processors
    need (the image path does not use them)."""

    class ImagesOnly(processor_class):
        def check_argument_for_proper_class(self, argument_name, argument):
            if argument_name != "video_processor":
                super().check_argument_for_proper_class(argument_name, argument)

    return ImagesOnly


def tiny_qwen2_vl(version: str = "2", patch_size: int = 4, merge: int = 2, size: str = "tiny"):
    from transformers import Qwen2VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    specials = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    tokenizer = family_tokenizer(specials, image_token="<|image_pad|>", video_token="<|video_pad|>")
    factor = patch_size * merge
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=patch_size,
        merge_size=merge,
        temporal_patch_size=2,
        min_pixels=4 * factor**2,
        max_pixels=36 * factor**2,
    )
    processor = _images_only(Qwen2VLProcessor)(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=None,
        chat_template=USER_TEMPLATE.replace("IMAGE", "<|vision_start|><|image_pad|><|vision_end|>"),
    )
    ids = {
        name: tokenizer.convert_tokens_to_ids(token)
        for name, token in zip(
            ("vision_start_token_id", "vision_end_token_id", "image_token_id", "video_token_id"), specials
        )
    }
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


def tiny_paligemma(image_size: int = 32, patch_size: int = 8, size: str = "tiny"):
    from transformers import (
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
    config = PaliGemmaConfig(
        vision_config=_siglip(image_size, patch_size),
        text_config=GemmaConfig(**_text(tokenizer, size)),
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


def _llava(size: str = "tiny"):
    text = TEXT_SIZES[size]
    return tiny_llava(
        text_hidden_size=text["hidden_size"],
        text_layers=text["num_hidden_layers"],
        text_heads=text["num_attention_heads"],
        num_key_value_heads=text["num_key_value_heads"],
    )


FAMILIES = {
    "llava": _llava,
    "llava_next": tiny_llava_next,
    "llava_onevision": tiny_llava_onevision,
    "qwen2_vl": tiny_qwen2_vl,
    "qwen2_5_vl": lambda size="tiny": tiny_qwen2_vl("2.5", size=size),
    "paligemma": tiny_paligemma,
    "gemma3": tiny_gemma3,
    "idefics3": tiny_idefics3,
    "smolvlm": lambda size="tiny": tiny_idefics3("smolvlm", size=size),
}


def tiny_vlm(family: str, seed: int = 0, size: str = "tiny"):
    """(model, processor) of `family` with a `TEXT_SIZES[size]` text model, seeded."""
    torch.manual_seed(seed)
    model, processor = FAMILIES[family](size=size)
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    return model, processor
