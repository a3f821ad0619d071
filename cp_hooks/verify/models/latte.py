"""Verification of the latte family's plans (`cp_hooks.plans.latte`, where each plan's reasons are): tiny configs, the
input cases of its pipelines.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import randn

_FRAMES = 4
_LATTE = dict(
    num_attention_heads=4,
    attention_head_dim=8,
    in_channels=4,
    out_channels=8,
    num_layers=1,
    cross_attention_dim=32,
    caption_channels=16,
    sample_size=8,
    patch_size=2,
    activation_fn="gelu-approximate",
    norm_type="ada_norm_single",
    num_embeds_ada_norm=1000,
    norm_elementwise_affine=False,
    norm_eps=1e-6,
    video_length=_FRAMES,
)


def _latte(config, g, frames=_FRAMES, height=8, width=12, text=7, temporal=True):
    batch = 2  # classifier-free guidance batch; the pipeline crops the T5 text to its longest prompt
    return dict(
        hidden_states=randn(g, batch, config["in_channels"], frames, height, width),
        timestep=torch.tensor([700, 700]),
        encoder_hidden_states=randn(g, batch, text, config["caption_channels"]),
        enable_temporal_attentions=temporal,
        return_dict=False,
    )


ENTRIES = [
    ModelEntry(
        "LatteTransformer3DModel",
        config=_LATTE,
        cases={"t2v": _latte, "image": lambda c, g: _latte(c, g, frames=1, temporal=False)},
        note="spatial and temporal blocks run whole; their attention (a frame's patches, a patch's frames), "
        "text cross-attention queries and feed-forward are split inside each block",
    ),
]
