"""Verification of the flux family's plans (`cp_hooks.plans.flux`, where each plan's reasons are): tiny configs, the
input cases of its pipelines.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import grid_ids, randn

# Flux.1: 512 T5 tokens; 2x2-packed latents become (B, H*W, 64) tokens.
_FLUX = dict(
    patch_size=1,
    in_channels=16,
    num_layers=1,
    num_single_layers=1,
    attention_head_dim=16,
    num_attention_heads=4,
    joint_attention_dim=32,
    pooled_projection_dim=32,
    guidance_embeds=True,
    axes_dims_rope=(4, 6, 6),
)


def _flux(config, g, text=8, height=4, width=6, reference=False):
    img_ids = grid_ids(height, width, lead=1)
    tokens = height * width
    if reference:  # Kontext: the reference image's tokens follow the target's, with first id axis 1
        ref_ids = grid_ids(height, width, lead=1)
        ref_ids[:, 0] = 1
        img_ids = torch.cat([img_ids, ref_ids])
        tokens *= 2
    return dict(
        hidden_states=randn(g, 1, tokens, config["in_channels"]),
        encoder_hidden_states=randn(g, 1, text, config["joint_attention_dim"]),
        pooled_projections=randn(g, 1, config["pooled_projection_dim"]),
        timestep=randn(g, 1).abs(),
        guidance=randn(g, 1).abs() + 3,
        img_ids=img_ids,
        txt_ids=torch.zeros(text, 3),
        return_dict=False,
    )


# Flux.2: 4-axis ids (T, H, W, L) shaped (B, S, 4) by the pipeline.
_FLUX2 = dict(
    patch_size=1,
    in_channels=16,
    num_layers=1,
    num_single_layers=1,
    attention_head_dim=16,
    num_attention_heads=4,
    joint_attention_dim=32,
    timestep_guidance_channels=32,
    axes_dims_rope=(4, 4, 4, 4),
)


def _flux2(config, g, text=8, height=4, width=6):
    txt_ids = grid_ids(1, 1, 1, text)
    return dict(
        hidden_states=randn(g, 1, height * width, config["in_channels"]),
        encoder_hidden_states=randn(g, 1, text, config["joint_attention_dim"]),
        timestep=randn(g, 1).abs(),
        guidance=randn(g, 1).abs() + 3,
        img_ids=grid_ids(1, height, width, 1)[None],
        txt_ids=txt_ids[None],
        return_dict=False,
    )


# Flux.3: (S, 4) ids (t, h, w, l); text advances along l, references sit at l = -1, -2, ...
_FLUX3 = dict(
    in_channels=16,
    cond_in_channels=12,
    num_layers=1,
    num_single_layers=1,
    attention_head_dim=16,
    num_attention_heads=4,
    joint_attention_dim=32,
    timestep_channels=32,
    mlp_ratio=2.0,
    axes_dims_rope=(4, 4, 4, 4),
)


def _flux3_image_ids(height, width, l_coord=0, scale=1.0):
    ids = grid_ids(1, height, width, 1)
    ids[:, 1:3] *= scale  # the pipeline's image RoPE scale
    ids[:, 3] = l_coord
    return ids


def _flux3(config, g, text=7, height=3, width=5, references=(), flow_map=False):
    inputs = dict(
        hidden_states=randn(g, 1, height * width, config["in_channels"]),
        encoder_hidden_states=randn(g, 1, text, config["joint_attention_dim"]),
        timestep=torch.full((1,), 0.7),
        img_ids=_flux3_image_ids(height, width, scale=0.5),
        txt_ids=grid_ids(1, 1, 1, text),
        return_dict=False,
    )
    if references:  # image-to-image: one (height, width) grid per reference, concatenated
        inputs["image_cond_hidden_states"] = torch.cat(
            [randn(g, 1, h * w, config["cond_in_channels"]) for h, w in references], dim=1
        )
        inputs["image_cond_ids"] = torch.cat(
            [_flux3_image_ids(h, w, l_coord=-(1 + i), scale=0.5) for i, (h, w) in enumerate(references)]
        )
    if flow_map:  # step-distilled: the timestep this step jumps to
        inputs["target_timestep"] = torch.full((1,), 0.4)
    return inputs


# Chroma: Flux without the pooled / guidance embedding; a distilled modulation approximator.
_CHROMA = dict(
    patch_size=1,
    in_channels=16,
    num_layers=1,
    num_single_layers=1,
    attention_head_dim=16,
    num_attention_heads=4,
    joint_attention_dim=32,
    axes_dims_rope=(4, 6, 6),
    approximator_num_channels=16,
    approximator_hidden_dim=32,
    approximator_layers=1,
)


def _chroma(config, g, text=8, height=4, width=6, prompt_lengths=None):
    batch = len(prompt_lengths) if prompt_lengths else 1
    inputs = dict(
        hidden_states=randn(g, batch, height * width, config["in_channels"]),
        encoder_hidden_states=randn(g, batch, text, config["joint_attention_dim"]),
        timestep=randn(g, 1).abs().expand(batch),
        img_ids=grid_ids(height, width, lead=1),
        txt_ids=torch.zeros(text, 3),
        return_dict=False,
    )
    if prompt_lengths:
        # ChromaPipeline: the T5 mask keeps each prompt's tokens and one padding token after them
        # (mask_indices <= length), then _prepare_attention_mask appends ones for the image tokens.
        text_mask = torch.arange(text)[None, :] <= torch.tensor(prompt_lengths)[:, None]
        inputs["attention_mask"] = torch.cat([text_mask, torch.ones(batch, height * width, dtype=torch.bool)], 1)
    return inputs


ENTRIES = [
    ModelEntry(
        "FluxTransformer2DModel",
        config=_FLUX,
        cases={"t2i": _flux, "kontext": lambda c, g: _flux(c, g, reference=True)},
        note="Kontext: reference-image tokens concatenated to the sequence",
    ),
    ModelEntry("Flux2Transformer2DModel", config=_FLUX2, cases={"t2i": _flux2}),
    ModelEntry(
        "Flux3Transformer2DModel",
        config=_FLUX3,
        cases={
            "t2i": _flux3,
            "edit": lambda c, g: _flux3(c, g, references=((3, 3), (2, 3))),
            "distilled": lambda c, g: _flux3(c, g, flow_map=True),
        },
        case_configs={"distilled": dict(flow_map=True)},
        anything=True,
        note="three token modes split with their own ids; two reference images of other sizes; "
        "flow-map target_timestep; odd token counts",
    ),
    ModelEntry(
        "ChromaTransformer2DModel",
        config=_CHROMA,
        cases={"t2i": _chroma, "masked": lambda c, g: _chroma(c, g, text=8, prompt_lengths=(2, 5))},
        note="ChromaPipeline's [text, image] mask, which the blocks expand to v[q] & v[k]: split stream by "
        "stream with the text and the image (segments); two prompts with padded text",
    ),
]
