"""Tiny random diffusers pipelines built offline from configs, for the examples, their tests and the service.

Part of the installed package (`python -m cp_hooks serve` builds `tiny_flux_pipeline` by default, with nothing
to download); `examples/_tiny.py` re-exports these names for the example scripts.

Flux, Wan, QwenImage, CogView4, HunyuanVideo, LongCat-Image, SkyReels-V2, Ovis-Image, CogVideoX and LTX-Video.

Nothing is downloaded: every model is built from its config with random weights (seeded, so every rank
builds the same one), and the tokenizers are small word-level vocabularies made in code and wrapped in
transformers fast tokenizers. The images they generate are noise-like, but they exercise the real
pipelines end to end: tokenizers, text encoders, scheduler, the parallelized transformer and the VAE.
"""

from __future__ import annotations

import torch

# A small fixed vocabulary: words outside it become the unknown token, which is fine for random encoders.
_WORDS = (
    "a an the of on in at with and under over near by to from is are photo painting picture drawing "
    "cat dog fox bird horse fish owl robot astronaut city forest mountain river sea beach sky sun moon star "
    "cloud rain snow night day morning evening red green blue yellow black white golden silver small big "
    "old young happy running flying sitting walking swimming cinematic detailed realistic watercolor style "
    "light dark street house castle garden field lake tree flower space planet ship car train bridge"
).split()


def word_tokenizer(
    specials: dict[str, int],
    bos: str | None,
    eos: str | None,
    model_max_length: int,
    words: tuple[str, ...] = (),
    added: tuple[str, ...] = (),
):
    """A word-level fast tokenizer: lowercase, split on whitespace and punctuation, `bos`/`eos` added.

    Args:
        specials: special token -> id (they take the first ids, as in CLIP and T5 vocabularies); each is one
            token wherever it appears in the text (e.g. Qwen's `<|im_start|>`).
        bos: token put before every sequence, or None (T5 has none).
        eos: token put after every sequence, or None (Qwen's chat template ends its own text).
        model_max_length: the length pipelines pad and truncate to by default.
        words: vocabulary words after the shared ones (e.g. a prompt template's).
        added: strings that are one token each, matched before the split (e.g. "\n", a token in Qwen; the
            split drops whitespace otherwise); they take the ids after the words.

    Returns:
        a `transformers.PreTrainedTokenizerFast`.
    """
    from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = dict(specials)
    for word in (*_WORDS, *words, *added):
        vocab.setdefault(word, len(vocab))
    unk = next(token for token in specials if "unk" in token)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=unk))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    if added:
        tok.add_tokens([AddedToken(t, normalized=False) for t in added])
    single = " ".join(t for t in (bos, "$A", eos) if t)
    tok.post_processor = processors.TemplateProcessing(
        single=single, special_tokens=[(t, specials[t]) for t in (bos, eos) if t]
    )
    pad = next(token for token in specials if "pad" in token)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token=unk,
        pad_token=pad,
        eos_token=eos,
        bos_token=bos,
        model_max_length=model_max_length,
    )


def clip_tokenizer():
    """CLIP-like: <|startoftext|> ... <|endoftext|>, 77 tokens; ids match the tiny CLIPTextConfig below."""
    return word_tokenizer(
        {"<|startoftext|>": 0, "<pad>": 1, "<|endoftext|>": 2, "<unk>": 3},
        bos="<|startoftext|>",
        eos="<|endoftext|>",
        model_max_length=77,
    )


def t5_tokenizer():
    """T5-like: ... </s>, no start token; pad 0, eos 1, unk 2 as in T5's vocabulary."""
    return word_tokenizer({"<pad>": 0, "</s>": 1, "<unk>": 2}, bos=None, eos="</s>", model_max_length=512)


def _t5_encoder(vocab_size: int = 128, d_model: int = 32):
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(
        T5Config(  # type: ignore[call-arg]  # the stubs lack decoder_start_token_id
            vocab_size=vocab_size,
            d_model=d_model,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
    ).eval()


def _clip_encoder(hidden_size: int = 32):
    """A tiny CLIPTextModel for `clip_tokenizer`; its pooled output has `hidden_size` features."""
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0,
            eos_token_id=2,
            pad_token_id=1,
            vocab_size=128,
            hidden_size=hidden_size,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            projection_dim=32,
            hidden_act="gelu",
        )
    ).eval()


def tiny_flux_pipeline(seed: int = 0, layers: int = 1, heads: int = 4, head_dim: int = 16):
    """A FluxPipeline with a tiny random transformer, VAE, CLIP and T5 text encoders, and word-level tokenizers.

    The VAE downsamples by 2 and the pipeline packs 2x2 latent patches, so an image of H x W pixels gives
    (H/4) * (W/4) image tokens; the text adds `max_sequence_length` T5 tokens.

    Args:
        seed: weights seed; the same seed gives the same pipeline on every rank.
        layers: double-stream and single-stream transformer blocks, each.
        heads, head_dim: attention heads of the transformer (Ulysses needs heads divisible by its degree).
    """
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(seed)
    rope = (head_dim // 4, 3 * head_dim // 8, 3 * head_dim // 8)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=layers,
        num_single_layers=layers,
        attention_head_dim=head_dim,
        num_attention_heads=heads,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        guidance_embeds=True,
        axes_dims_rope=rope,
    )
    text_encoder = _clip_encoder()
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 8),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )
    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=clip_tokenizer(),
        text_encoder_2=_t5_encoder(),
        tokenizer_2=t5_tokenizer(),
        transformer=transformer,
    )
    for module in (transformer, text_encoder, vae, pipe.text_encoder_2):
        module.eval()
    return pipe


def _wan_like_transformer_and_vae(transformer_class, layers: int, heads: int, head_dim: int):
    """A tiny Wan-shaped transformer of `transformer_class` (Wan, SkyReels-V2) and a tiny Wan VAE."""
    from diffusers import AutoencoderKLWan

    transformer = transformer_class(
        patch_size=(1, 2, 2),
        num_attention_heads=heads,
        attention_head_dim=head_dim,
        in_channels=16,
        out_channels=16,
        text_dim=32,
        freq_dim=32,
        ffn_dim=64,
        num_layers=layers,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    )
    vae = AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    )
    return transformer, vae


def tiny_wan_pipeline(seed: int = 0, layers: int = 2, heads: int = 4, head_dim: int = 8):
    """A WanPipeline (text to video) with a tiny random transformer, Wan VAE and UMT5-like (T5) encoder.

    The VAE downsamples 8x in space and 4x in time; the transformer patches 1x2x2, so `frames` x H x W
    pixels give ((frames-1)/4 + 1) * (H/16) * (W/16) video tokens.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel

    torch.manual_seed(seed)
    transformer, vae = _wan_like_transformer_and_vae(WanTransformer3DModel, layers, heads, head_dim)
    pipe = WanPipeline(
        tokenizer=t5_tokenizer(),
        text_encoder=_t5_encoder(),
        vae=vae,
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
    )
    for module in (transformer, vae, pipe.text_encoder):
        module.eval()
    return pipe


# The words of QwenImagePipeline's prompt template ("Describe the image by detailing the color, shape, ...").
_QWEN_TEMPLATE_WORDS = (
    "system user assistant describe image detailing color shape size texture quantity text spatial relationships "
    "objects background , :"
).split()


def qwen_tokenizer():
    """Qwen-like: `<|im_start|>`, `<|im_end|>` and "\\n" are tokens, nothing added around a text.

    QwenImagePipeline's template then gives 34 tokens before the prompt, as Qwen2.5-VL's tokenizer does (the
    pipeline drops `prompt_template_encode_start_idx` = 34), and the prompt's words followed by 5 tokens
    (`<|im_end|>` "\\n" `<|im_start|>` assistant "\\n") after it.
    """
    return word_tokenizer(
        {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2, "<unk>": 3, "<pad>": 4},
        bos=None,
        eos=None,
        model_max_length=32768,
        words=_QWEN_TEMPLATE_WORDS,
        added=("\n",),
    )


def _qwen25vl_encoder(vocab_size: int = 128, hidden_size: int = 32):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    head_dim = hidden_size // 2
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            intermediate_size=2 * hidden_size,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=512,
            bos_token_id=None,
            eos_token_id=2,
            pad_token_id=4,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 1000000.0,
                "mrope_section": [head_dim // 8, 3 * head_dim // 16, 3 * head_dim // 16],
            },
        ),
        vision_config=dict(
            depth=1,
            hidden_size=16,
            intermediate_size=16,
            num_heads=2,
            out_hidden_size=hidden_size,
            fullatt_block_indexes=[0],
        ),
        image_token_id=vocab_size,
        video_token_id=vocab_size + 1,  # no vision tokens in a text-only vocabulary
        vision_start_token_id=vocab_size + 2,
        vision_end_token_id=vocab_size + 3,
    )
    return Qwen2_5_VLForConditionalGeneration(config).eval()


def tiny_qwenimage_pipeline(seed: int = 0, layers: int = 1, heads: int = 4, head_dim: int = 16):
    """A QwenImagePipeline with a tiny random transformer, QwenImage VAE and Qwen2.5-VL text encoder.

    The VAE downsamples by 4 and the pipeline packs 2x2 latent patches, so an image of H x W pixels gives
    (H/8) * (W/8) image tokens; a prompt of n words gives n + 5 text tokens (the template's end; see
    `qwen_tokenizer`), fewer than `max_sequence_length`.

    Args:
        seed: weights seed; the same seed gives the same pipeline on every rank.
        layers: transformer blocks.
        heads, head_dim: attention heads of the transformer (Ulysses needs heads divisible by its degree;
            head_dim a multiple of 16 for the rotary axes).
    """
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImagePipeline,
        QwenImageTransformer2DModel,
    )

    torch.manual_seed(seed)
    rope = (head_dim // 4, 3 * head_dim // 8, 3 * head_dim // 8)
    transformer = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=layers,
        attention_head_dim=head_dim,
        num_attention_heads=heads,
        joint_attention_dim=32,
        axes_dims_rope=rope,
    )
    vae = AutoencoderKLQwenImage(
        base_dim=8,
        z_dim=4,
        dim_mult=[1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True],
        latents_mean=[0.0] * 4,
        latents_std=[1.0] * 4,
    )
    pipe = QwenImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=_qwen25vl_encoder(),
        tokenizer=qwen_tokenizer(),
        transformer=transformer,
    )
    for module in (transformer, vae, pipe.text_encoder):
        module.eval()
    return pipe


def glm_tokenizer():
    """GLM-like: `[gMASK]` before every text (GLM-4 puts `[gMASK]<sop>`), no end token, pad 0."""
    return word_tokenizer(
        {"<pad>": 0, "<unk>": 1, "[gMASK]": 2, "<sop>": 3}, bos="[gMASK]", eos=None, model_max_length=1024
    )


def _glm_encoder(vocab_size: int = 128, hidden_size: int = 32):
    from transformers import GlmConfig, GlmModel

    return GlmModel(
        GlmConfig(
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            intermediate_size=2 * hidden_size,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            head_dim=hidden_size // 2,
            max_position_embeddings=512,
            pad_token_id=0,
        )
    ).eval()


def tiny_cogview4_pipeline(seed: int = 0, layers: int = 1, heads: int = 4, head_dim: int = 8):
    """A CogView4Pipeline with a tiny random transformer, VAE and GLM text encoder (`transformers.GlmModel`).

    The VAE downsamples by 2 and the transformer patches 2x2, so an image of H x W pixels (multiples of 16) gives
    (H/4) * (W/4) image tokens; the pipeline pads the text on the left to a multiple of 16 tokens, so a prompt
    of up to 15 words gives 16 text tokens (the padding, `[gMASK]`, the words).

    Args:
        seed: weights seed; the same seed gives the same pipeline on every rank.
        layers: transformer blocks.
        heads, head_dim: attention heads of the transformer (Ulysses needs heads divisible by its degree;
            head_dim a multiple of 4 for the 2-D rotary axes).
    """
    from diffusers import AutoencoderKL, CogView4Pipeline, CogView4Transformer2DModel, FlowMatchEulerDiscreteScheduler

    torch.manual_seed(seed)
    transformer = CogView4Transformer2DModel(
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_layers=layers,
        attention_head_dim=head_dim,
        num_attention_heads=heads,
        text_embed_dim=32,
        time_embed_dim=16,
        condition_dim=8,
        pos_embed_max_size=32,
        sample_size=16,
        rope_axes_dim=(16, 16),
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 8),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        use_quant_conv=False,
        use_post_quant_conv=False,
        scaling_factor=1.0,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(
        base_shift=0.25, max_shift=0.75, base_image_seq_len=256, use_dynamic_shifting=True, time_shift_type="linear"
    )
    pipe = CogView4Pipeline(
        tokenizer=glm_tokenizer(), text_encoder=_glm_encoder(), vae=vae, transformer=transformer, scheduler=scheduler
    )
    for module in (transformer, vae, pipe.text_encoder):
        module.eval()
    return pipe


def _hunyuan_template_words() -> tuple[str, ...]:
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import DEFAULT_PROMPT_TEMPLATE
    from tokenizers import pre_tokenizers

    text = DEFAULT_PROMPT_TEMPLATE["template"].split("{}")[0]
    for special in ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"):
        text = text.replace(special, " ")
    return tuple(dict.fromkeys(w.lower() for w, _ in pre_tokenizers.Whitespace().pre_tokenize_str(text)))


def llama_tokenizer():
    """Llama-3-like: `<|begin_of_text|>` before every text, the header and `<|eot_id|>` tokens, "\\n\\n" one token.

    The words of HunyuanVideoPipeline's prompt template are in the vocabulary, so the template has no unknown
    token; its part before the prompt is 94 tokens here, not the 95 that the pipeline's default `crop_start`
    counts with Llama 3's byte-level BPE tokenizer: use `hunyuan_video_prompt_template()`.
    """
    specials = {
        "<|begin_of_text|>": 0,
        "<pad>": 1,
        "<unk>": 2,
        "<|start_header_id|>": 3,
        "<|end_header_id|>": 4,
        "<|eot_id|>": 5,
    }
    return word_tokenizer(
        specials,
        bos="<|begin_of_text|>",
        eos=None,
        model_max_length=512,
        words=_hunyuan_template_words(),
        added=("\n\n",),
    )


def hunyuan_video_prompt_template() -> dict:
    """HunyuanVideoPipeline's default prompt template with the `crop_start` of `llama_tokenizer` (94).

    `crop_start` is the number of tokens the pipeline drops from the start of the encoded text: everything
    before the prompt (the start token included), counted here with the tokenizer itself.
    """
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import DEFAULT_PROMPT_TEMPLATE

    template = DEFAULT_PROMPT_TEMPLATE["template"]
    crop_start = len(llama_tokenizer()(template.split("{}")[0]).input_ids)
    return {"template": template, "crop_start": crop_start}


def _llama_encoder(vocab_size: int = 256, hidden_size: int = 32):
    from transformers import LlamaConfig, LlamaModel

    return LlamaModel(
        LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            intermediate_size=2 * hidden_size,
            num_hidden_layers=3,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=512,
            bos_token_id=0,
            eos_token_id=5,
            pad_token_id=1,
        )
    ).eval()


def tiny_hunyuan_video_pipeline(seed: int = 0, layers: int = 1, heads: int = 4, head_dim: int = 16):
    """A HunyuanVideoPipeline with a tiny random transformer, HunyuanVideo VAE, Llama and CLIP text encoders.

    The VAE downsamples 4x in space and 4x in time and the transformer patches 1x2x2, so `num_frames` x H x W
    pixels (H, W multiples of 16) give ((num_frames-1)/4 + 1) * (H/8) * (W/8) video tokens; the text adds
    `max_sequence_length` Llama tokens (right-padded, with their mask) and CLIP's pooled output. Pass
    `prompt_template=hunyuan_video_prompt_template()` (the default template's `crop_start` counts Llama 3's
    tokens, one more than `llama_tokenizer` gives).

    Args:
        seed: weights seed; the same seed gives the same pipeline on every rank.
        layers: dual-stream and single-stream transformer blocks, each.
        heads, head_dim: attention heads of the transformer (Ulysses needs heads divisible by its degree;
            head_dim a multiple of 16 for the 3-D rotary axes).
    """
    from diffusers import (
        AutoencoderKLHunyuanVideo,
        FlowMatchEulerDiscreteScheduler,
        HunyuanVideoPipeline,
        HunyuanVideoTransformer3DModel,
    )

    torch.manual_seed(seed)
    rope = (head_dim // 4, 3 * head_dim // 8, 3 * head_dim // 8)
    transformer = HunyuanVideoTransformer3DModel(
        in_channels=4,
        out_channels=4,
        num_attention_heads=heads,
        attention_head_dim=head_dim,
        num_layers=layers,
        num_single_layers=layers,
        num_refiner_layers=1,
        mlp_ratio=2.0,
        patch_size=2,
        patch_size_t=1,
        text_embed_dim=32,
        pooled_projection_dim=32,
        rope_axes_dim=rope,
        guidance_embeds=True,
    )
    vae = AutoencoderKLHunyuanVideo(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        down_block_types=("HunyuanVideoDownBlock3D",) * 3,
        up_block_types=("HunyuanVideoUpBlock3D",) * 3,
        block_out_channels=(8, 8, 8),
        layers_per_block=1,
        norm_num_groups=4,
        spatial_compression_ratio=4,
        temporal_compression_ratio=4,
        mid_block_add_attention=False,
    )
    pipe = HunyuanVideoPipeline(
        text_encoder=_llama_encoder(),
        tokenizer=llama_tokenizer(),
        transformer=transformer,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        text_encoder_2=_clip_encoder(),
        tokenizer_2=clip_tokenizer(),
    )
    for module in (transformer, vae, pipe.text_encoder, pipe.text_encoder_2):
        module.eval()
    return pipe


def tiny_longcat_image_pipeline(
    seed: int = 0, layers: int = 1, heads: int = 4, head_dim: int = 16, text_tokens: int = 16
):
    """A LongCatImagePipeline with a tiny random transformer, VAE and Qwen2.5-VL text encoder (no prompt rewrite).

    The VAE downsamples by 2 and the pipeline packs 2x2 latent patches (16 latent channels, hard-coded by the
    pipeline), so an image of H x W pixels gives (H/4) * (W/4) image tokens; the text is padded to
    `text_tokens` (the pipeline's `tokenizer_max_length`, 512 in LongCat-Image, set smaller here), whatever the
    prompt, and the chat template's prefix and suffix around it are dropped after the encoder.

    Call it with `enable_prompt_rewrite=False`. It has no `text_processor` (a `Qwen2VLProcessor`), which serves
    only the prompt rewrite (`enable_prompt_rewrite=True`, the default), in which the text encoder generates a
    new prompt of up to 512 tokens; here a processor cannot even be built (without torchvision, transformers'
    class check of its video processor fails).

    Args:
        seed: weights seed; the same seed gives the same pipeline on every rank.
        layers: double-stream and single-stream transformer blocks, each.
        heads, head_dim: attention heads of the transformer (Ulysses needs heads divisible by its degree;
            head_dim a multiple of 16 for the rotary axes).
        text_tokens: text tokens of every prompt.
    """
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        LongCatImagePipeline,
        LongCatImageTransformer2DModel,
    )

    torch.manual_seed(seed)
    rope = (head_dim // 4, 3 * head_dim // 8, 3 * head_dim // 8)
    transformer = LongCatImageTransformer2DModel(
        patch_size=1,
        in_channels=64,
        num_layers=layers,
        num_single_layers=layers,
        attention_head_dim=head_dim,
        num_attention_heads=heads,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=rope,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 8),
        layers_per_block=1,
        latent_channels=16,
        norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )
    pipe = LongCatImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True),
        vae=vae,
        text_encoder=_qwen25vl_encoder(),
        tokenizer=qwen_tokenizer(),
        text_processor=None,
        transformer=transformer,
    )
    pipe.tokenizer_max_length = text_tokens
    for module in (transformer, vae, pipe.text_encoder):
        module.eval()
    return pipe


def tiny_skyreels_v2_pipeline(seed: int = 0, layers: int = 2, heads: int = 4, head_dim: int = 8):
    """A SkyReelsV2Pipeline (text to video) with a tiny random transformer, Wan VAE and UMT5-like (T5) encoder.

    As `tiny_wan_pipeline` (SkyReelsV2Transformer3DModel is Wan's with diffusion-forcing options left off): the
    VAE downsamples 8x in space and 4x in time and the transformer patches 1x2x2, so `num_frames` x H x W pixels
    give ((num_frames-1)/4 + 1) * (H/16) * (W/16) video tokens; the text is `max_sequence_length` T5 tokens
    (the prompt's, then zeros). The scheduler is SkyReels-V2's: UniPC with flow sigmas (shift 8).

    The pipeline cleans every prompt with `ftfy.fix_text`, unguarded (Wan's checks `is_ftfy_available()` first),
    so without ftfy installed it raises NameError: the pipeline's module is then given a `fix_text` that leaves
    the text as it is, which is what Wan does without ftfy.
    """
    import types

    from diffusers import SkyReelsV2Pipeline, SkyReelsV2Transformer3DModel, UniPCMultistepScheduler
    from diffusers.pipelines.skyreels_v2 import pipeline_skyreels_v2
    from diffusers.utils import is_ftfy_available

    if not is_ftfy_available() and not hasattr(pipeline_skyreels_v2, "ftfy"):
        pipeline_skyreels_v2.ftfy = types.SimpleNamespace(fix_text=lambda text: text)
    torch.manual_seed(seed)
    transformer, vae = _wan_like_transformer_and_vae(SkyReelsV2Transformer3DModel, layers, heads, head_dim)
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=8.0)
    pipe = SkyReelsV2Pipeline(
        tokenizer=t5_tokenizer(), text_encoder=_t5_encoder(), vae=vae, transformer=transformer, scheduler=scheduler
    )
    for module in (transformer, vae, pipe.text_encoder):
        module.eval()
    return pipe


# Qwen3's chat template for one user message, as OvisImagePipeline applies it (add_generation_prompt=True,
# enable_thinking=False: an empty thinking block after the assistant's header).
_QWEN3_CHAT_TEMPLATE = (
    "{%- for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{ '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}{%- endif %}"
)


def qwen3_tokenizer():
    """Qwen3-like: `qwen_tokenizer`'s tokens plus `<think>`, `</think>` and "\\n\\n", with Qwen3's chat template.

    OvisImagePipeline's message (`<|im_start|>` user "\\n", its system prompt "Describe the image by detailing
    the color, quantity, ...: ", then the prompt) has 29 tokens before the prompt here: use
    `ovis_image_prompt_begin(tokenizer)` for the pipeline's `user_prompt_begin_id` (28 in the pipeline, counted
    with Qwen3's byte-level BPE tokenizer). After the prompt come 10 tokens: `<|im_end|>` "\\n" `<|im_start|>`
    assistant "\\n" `<think>` "\\n\\n" `</think>` "\\n\\n" and nothing else (the text is right-padded).
    """
    tok = word_tokenizer(
        {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2, "<unk>": 3, "<pad>": 4, "<think>": 5, "</think>": 6},
        bos=None,
        eos=None,
        model_max_length=32768,
        words=_QWEN_TEMPLATE_WORDS,
        added=("\n", "\n\n"),
    )
    tok.chat_template = _QWEN3_CHAT_TEMPLATE
    return tok


def ovis_image_prompt_begin(pipe) -> int:
    """The number of tokens before the prompt in OvisImagePipeline's message, counted with its own tokenizer."""
    message = pipe._get_messages("")[0]
    prefix = message[: message.index(pipe.system_prompt) + len(pipe.system_prompt)]
    return len(pipe.tokenizer(prefix, add_special_tokens=False).input_ids)


def _qwen3_encoder(vocab_size: int = 128, hidden_size: int = 32):
    from transformers import Qwen3Config, Qwen3Model

    return Qwen3Model(
        Qwen3Config(
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            intermediate_size=2 * hidden_size,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            head_dim=hidden_size // 2,
            max_position_embeddings=512,
            pad_token_id=4,
            bos_token_id=None,
            eos_token_id=2,
        )
    ).eval()


def tiny_ovis_image_pipeline(seed: int = 0, layers: int = 1, heads: int = 4, head_dim: int = 16):
    """An OvisImagePipeline with a tiny random transformer, VAE and Qwen3 text encoder (`transformers.Qwen3Model`).

    The VAE downsamples by 2 and the pipeline packs 2x2 latent patches (16 latent channels: the transformer's 64
    input channels / 4), so an image of H x W pixels gives (H/4) * (W/4) image tokens; the text is
    `max_sequence_length` tokens whatever the prompt (the message is right-padded, its tokens before the prompt
    are dropped after the encoder and the padding's features zeroed). `user_prompt_begin_id` is set to the
    count of `qwen3_tokenizer` (see `ovis_image_prompt_begin`).

    Args:
        seed: weights seed; the same seed gives the same pipeline on every rank.
        layers: double-stream and single-stream transformer blocks, each.
        heads, head_dim: attention heads of the transformer (Ulysses needs heads divisible by its degree;
            head_dim a multiple of 16 for the rotary axes).
    """
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, OvisImagePipeline, OvisImageTransformer2DModel

    torch.manual_seed(seed)
    rope = (head_dim // 4, 3 * head_dim // 8, 3 * head_dim // 8)
    transformer = OvisImageTransformer2DModel(
        patch_size=1,
        in_channels=64,
        out_channels=64,
        num_layers=layers,
        num_single_layers=layers,
        attention_head_dim=head_dim,
        num_attention_heads=heads,
        joint_attention_dim=32,
        axes_dims_rope=rope,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 8),
        layers_per_block=1,
        latent_channels=16,
        norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )
    pipe = OvisImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True),
        vae=vae,
        text_encoder=_qwen3_encoder(),
        tokenizer=qwen3_tokenizer(),
        transformer=transformer,
    )
    pipe.user_prompt_begin_id = ovis_image_prompt_begin(pipe)
    for module in (transformer, vae, pipe.text_encoder):
        module.eval()
    return pipe


def tiny_cogvideox_pipeline(seed: int = 0, layers: int = 2, heads: int = 4, head_dim: int = 8, text_tokens: int = 16):
    """A CogVideoXPipeline (text to video, CogVideoX 1.0) with a tiny random transformer, VAE and T5 encoder.

    The pipeline's classifier-free guidance is batched: one transformer call per step with the unconditional and
    conditional inputs stacked in the batch (unconditional first). The VAE downsamples 8x in space (four blocks)
    and 4x in time, and the transformer patches 2x2, so `num_frames` x H x W pixels give
    ((num_frames-1)/4 + 1) * (H/16) * (W/16) video tokens after `text_tokens` text tokens; call the pipeline
    with `max_sequence_length=text_tokens` (the transformer's joint positions are sized for that text length).
    The transformer's output is (batch, frames, channels, height, width): FasterCache's `tensor_format="BFCHW"`.
    """
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXPipeline, CogVideoXTransformer3DModel

    torch.manual_seed(seed)
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=heads,
        attention_head_dim=head_dim,
        in_channels=4,
        out_channels=4,
        time_embed_dim=16,
        text_embed_dim=32,
        num_layers=layers,
        sample_width=8,
        sample_height=8,
        sample_frames=9,
        patch_size=2,
        temporal_compression_ratio=4,
        max_text_seq_length=text_tokens,
    )
    vae = AutoencoderKLCogVideoX(
        in_channels=3,
        out_channels=3,
        down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=2,
        temporal_compression_ratio=4,
    )
    pipe = CogVideoXPipeline(
        tokenizer=t5_tokenizer(),
        text_encoder=_t5_encoder(),
        vae=vae,
        transformer=transformer,
        scheduler=CogVideoXDDIMScheduler(),
    )
    for module in (transformer, vae, pipe.text_encoder):
        module.eval()
    return pipe


def tiny_ltx_pipeline(seed: int = 0, layers: int = 2, heads: int = 4, head_dim: int = 8):
    """An LTXPipeline (LTX-Video, text to video) with a tiny random transformer, LTX VAE and T5 encoder.

    The pipeline's classifier-free guidance is batched (unconditional and conditional inputs stacked in one
    transformer call). The VAE patchifies 4x4 and downsamples twice more in space and time (16x in space, 4x in
    time), with no decoder noise injection and no timestep conditioning; the transformer patches 1x1x1, so
    `num_frames` x H x W pixels (H, W multiples of 32: the pipeline checks it) give ((num_frames-1)/4 + 1) *
    (H/16) * (W/16) video tokens; the text is `max_sequence_length` T5 tokens with their padding mask.

    Args:
        seed: weights seed; the same seed gives the same pipeline on every rank.
        layers: transformer blocks.
        heads, head_dim: attention heads of the transformer (Ulysses needs heads divisible by its degree).
    """
    from diffusers import (
        AutoencoderKLLTXVideo,
        FlowMatchEulerDiscreteScheduler,
        LTXPipeline,
        LTXVideoTransformer3DModel,
    )

    torch.manual_seed(seed)
    transformer = LTXVideoTransformer3DModel(
        in_channels=4,
        out_channels=4,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=heads,
        attention_head_dim=head_dim,
        cross_attention_dim=heads * head_dim,
        num_layers=layers,
        caption_channels=32,
    )
    vae = AutoencoderKLLTXVideo(
        latent_channels=4,
        block_out_channels=(8, 8, 16, 16),
        decoder_block_out_channels=(8, 8, 16, 16),
        layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, False, False),
        decoder_spatio_temporal_scaling=(True, True, False, False),
        decoder_inject_noise=(False, False, False, False, False),
        timestep_conditioning=False,
    )
    pipe = LTXPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=_t5_encoder(),
        tokenizer=t5_tokenizer(),
        transformer=transformer,
    )
    for module in (transformer, vae, pipe.text_encoder):
        module.eval()
    return pipe
