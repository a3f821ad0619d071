"""Tiny random diffusers pipelines for the examples: moved to `cp_hooks.verify.tiny_pipelines` (installed with
the package, so that `python -m cp_hooks serve` can build one); this module re-exports them for the scripts
and tests that `import _tiny`."""

from cp_hooks.verify.tiny_pipelines import (  # noqa: F401
    clip_tokenizer,
    glm_tokenizer,
    hunyuan_video_prompt_template,
    llama_tokenizer,
    ovis_image_prompt_begin,
    qwen3_tokenizer,
    qwen_tokenizer,
    t5_tokenizer,
    tiny_cogvideox_pipeline,
    tiny_cogview4_pipeline,
    tiny_flux_pipeline,
    tiny_hunyuan_video_pipeline,
    tiny_longcat_image_pipeline,
    tiny_ltx_pipeline,
    tiny_ovis_image_pipeline,
    tiny_qwenimage_pipeline,
    tiny_skyreels_v2_pipeline,
    tiny_wan_pipeline,
    word_tokenizer,
)
