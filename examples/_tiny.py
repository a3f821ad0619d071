"""Tiny random diffusers pipelines for the examples: moved to `cp_hooks.verify.tiny_pipelines` (installed with
the package, so that `python -m cp_hooks serve` can build one); this module re-exports them for the scripts
and tests that `import _tiny`."""

from cp_hooks.verify.tiny_pipelines import (  # noqa: F401
    word_tokenizer,
    clip_tokenizer,
    t5_tokenizer,
    tiny_flux_pipeline,
    tiny_wan_pipeline,
    qwen_tokenizer,
    tiny_qwenimage_pipeline,
    glm_tokenizer,
    tiny_cogview4_pipeline,
    llama_tokenizer,
    hunyuan_video_prompt_template,
    tiny_hunyuan_video_pipeline,
    tiny_longcat_image_pipeline,
    tiny_skyreels_v2_pipeline,
    qwen3_tokenizer,
    ovis_image_prompt_begin,
    tiny_ovis_image_pipeline,
    tiny_cogvideox_pipeline,
)
