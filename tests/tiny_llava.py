"""A tiny `LlavaForConditionalGeneration` (tiny CLIP vision tower, tiny Llama with grouped-query attention) with a
real byte-level BPE tokenizer trained on the prompt vocabulary and a `LlavaProcessor`: the teacher in tests."""

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

from hf_lfi.interactions.prompts import PROMPTS

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}USER: {% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image>\n{% else %}{{ item['text'] }}{% endif %}{% endfor %} "
    "{% else %}ASSISTANT: {{ message['content'][0]['text'] }}</s>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
CORPUS_EXTRA = [
    "{'foreground': {owl}, 'background': {rocket, sky}}",
    "Yes, there are dogs in the image, and the background is grass.",
    "red green blue owl rocket sky grass dog dogs cat hippopotamus elephant",
    "USER: ASSISTANT:",
]


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator([p.question for p in PROMPTS.values()] + CORPUS_EXTRA, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_special_tokens={"image_token": "<image>"},
    )


def real_processor_llava(processor_path, seed: int = 0):
    """(model, processor): the real LLaVA-1.5 processor (Llama-2 SentencePiece tokenizer, CLIP at 336 px, 576 image
    tokens) with a random LLaVA whose towers are tiny but whose vocabulary and image grid are the real ones."""
    import torch
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(processor_path)
    tokenizer = processor.tokenizer
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=1,
            num_attention_heads=4,
            image_size=336,
            patch_size=14,
        ),
        text_config=LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=4096,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=1,
            eos_token_id=2,
        ),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, processor


def tiny_llava(
    image_size: int = 32,
    patch_size: int = 8,
    num_key_value_heads: int = 2,
    seed: int = 0,
    text_hidden_size: int = 32,
    text_intermediate_size: int | None = None,
    text_layers: int = 2,
    text_heads: int = 4,
    vision_hidden_size: int = 32,
):
    """(model, processor): a (image_size / patch_size)^2-token image, `text_layers` Llama layers with grouped-query
    attention (`text_heads` query heads, `num_key_value_heads` kv heads). The defaults are the tests' tiny teacher;
    benchmarks/bench_teacher.py asks for a mid-size one."""
    import torch

    tokenizer = tiny_tokenizer()
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    )
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=vision_hidden_size,
            intermediate_size=vision_hidden_size + 5,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=image_size,
            patch_size=patch_size,
        ),
        text_config=LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=text_hidden_size,
            intermediate_size=text_intermediate_size or 2 * text_hidden_size,
            num_hidden_layers=text_layers,
            num_attention_heads=text_heads,
            num_key_value_heads=num_key_value_heads,
            max_position_embeddings=2048,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        ),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, processor
