"""Verification of the cosmos family's plans (`cp_hooks.plans.cosmos`, where each plan's reasons are): tiny configs,
the input cases of its pipelines.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import randn

_LATENT = 4
# head dim 12: the rotary table gives 4 channels each to time, height and width.
_COSMOS = dict(
    in_channels=_LATENT,
    out_channels=_LATENT,
    num_attention_heads=4,
    attention_head_dim=12,
    num_layers=2,
    mlp_ratio=2.0,
    text_embed_dim=32,
    adaln_lora_dim=16,
    max_size=(8, 32, 32),
    concat_padding_mask=False,
)
_COSMOS1 = dict(extra_pos_embed_type="learnable")  # Cosmos 1.0: learnable positions added in every block
_COSMOS2 = dict(extra_pos_embed_type=None, in_channels=_LATENT + 1)  # + the condition mask channel
_COSMOS25 = dict(
    _COSMOS2, use_crossattn_projection=True, crossattn_proj_in_channels=24, encoder_hidden_states_channels=32
)
_TRANSFER25 = dict(
    _COSMOS25, controlnet_block_every_n=1, img_context_dim_in=8, img_context_num_tokens=3, img_context_dim_out=48
)


def _cosmos(config, g, text=8, frames=3, height=8, width=12, per_frame=False, fps=24, control=False):
    batch = 1  # the pipelines run the conditional and unconditional passes separately
    text_dim = config["crossattn_proj_in_channels"] if config["use_crossattn_projection"] else config["text_embed_dim"]
    inputs = dict(
        hidden_states=randn(g, batch, _LATENT, frames, height, width),
        timestep=torch.full((batch,), 0.6),
        encoder_hidden_states=randn(g, batch, text, text_dim),
        padding_mask=torch.zeros(1, 1, height * 8, width * 8),
        return_dict=False,
    )
    if fps:
        inputs["fps"] = fps
    if config["in_channels"] > _LATENT:  # video2world: the first latent frame is the conditioning input
        cond = torch.zeros(batch, 1, frames, 1, 1)
        cond[:, :, :1] = 1
        inputs["condition_mask"] = cond.expand(batch, 1, frames, height, width).clone()
        if per_frame:  # one timestep per latent frame; the conditioning frame's is its own (small) one
            inputs["timestep"] = cond * 0.1 + (1 - cond) * 0.6
    if config["img_context_dim_in"]:
        image = randn(g, batch, config["img_context_num_tokens"], config["img_context_dim_in"])
        inputs["encoder_hidden_states"] = (inputs["encoder_hidden_states"], image)
    if control:  # Cosmos Transfer: one control residual per block (every_n = 1)
        tokens = frames * (height // 2) * (width // 2)
        hidden = config["num_attention_heads"] * config["attention_head_dim"]
        inputs["block_controlnet_hidden_states"] = [
            randn(g, batch, tokens, hidden) for _ in range(config["num_layers"])
        ]
    return inputs


ENTRIES = [
    ModelEntry(
        "CosmosTransformer3DModel",
        config=_COSMOS,
        cases={
            "text2world": _cosmos,
            "video2world_2": lambda c, g: _cosmos(c, g, per_frame=True),
            "predict_2_5": lambda c, g: _cosmos(c, g, per_frame=True, fps=None),
            "transfer_2_5": lambda c, g: _cosmos(c, g, per_frame=True, fps=None, control=True),
        },
        case_configs={
            "text2world": _COSMOS1,
            "video2world_2": _COSMOS2,
            "predict_2_5": _COSMOS25,
            "transfer_2_5": _TRANSFER25,
        },
        note="Cosmos 1.0 learnable positions; 2.0 / 2.5 per-frame timesteps (per-token modulation split in "
        "every block); 2.5 Transfer control residuals and image context; text cross-attention local",
    ),
]

UNSUPPORTED = {
    "Cosmos3OmniTransformer": (
        "packed dual-pathway sequences with grouped-query attention and ragged lengths; diffusers itself says "
        "its context parallelism cannot be a declarative plan (it uses shard/gather callbacks instead)"
    ),
}
