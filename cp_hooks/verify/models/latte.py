"""Latte (LatteTransformer3DModel): factorised attention, split inside every block (as Helios does).

Latte alternates spatial blocks, whose batch is (B * frames) and whose sequence is one frame's patches, and
temporal blocks, whose batch is (B * patches) and whose sequence is the frames of one patch. `forward`
reshapes between the two layouts with the whole batch size, and hands the temporal blocks a timestep
embedding repeated for every patch of the whole frame, (B * patches, 6 * D). A shard of either layout does
not survive the reshape into the other (the rows of a split batch-major layout are not a contiguous piece of
the other one), so the blocks themselves run whole; what is split is the work inside them:

- the self-attention of both block types (spatial: a frame's patches; temporal: the frames), its input
  split along the sequence and its output gathered after `to_out`;
- the spatial blocks' text cross-attention: its queries are split at `to_q` and gathered after `to_out`;
  the text is replicated and its processor calls SDPA directly, so the module is marked LocalAttention();
- the feed-forward of both block types, split at its input and gathered after its last linear layer.

The modulation, norms and residuals run whole on every rank. The positional embeddings are added in `forward`
(`pos_embed` for the patches, `temp_pos_embed` before the first temporal block), before any split.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import randn
from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, LocalAttention

_TOKENS = ContextParallelInput(split_dim=1, expected_dims=3)
_GATHER = ContextParallelOutput(gather_dim=1, expected_dims=3)


def _inside(blocks: str, cross: bool) -> dict:
    plan = {
        f"{blocks}.*.attn1": {"hidden_states": _TOKENS},
        f"{blocks}.*.attn1.to_out.1": _GATHER,
        f"{blocks}.*.ff": {"hidden_states": _TOKENS},
        f"{blocks}.*.ff.net.2": _GATHER,
    }
    if cross:
        plan.update({
            f"{blocks}.*.attn2": LocalAttention(),
            f"{blocks}.*.attn2.to_q": {"input": _TOKENS},
            f"{blocks}.*.attn2.to_out.1": _GATHER,
        })
    return plan


LATTE = {**_inside("transformer_blocks", cross=True), **_inside("temporal_transformer_blocks", cross=False)}


_FRAMES = 4
_LATTE = dict(num_attention_heads=4, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=1,
              cross_attention_dim=32, caption_channels=16, sample_size=8, patch_size=2, activation_fn="gelu-approximate",
              norm_type="ada_norm_single", num_embeds_ada_norm=1000, norm_elementwise_affine=False, norm_eps=1e-6,
              video_length=_FRAMES)


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
    ModelEntry("LatteTransformer3DModel", LATTE, _LATTE,
               {"t2v": _latte, "image": lambda c, g: _latte(c, g, frames=1, temporal=False)},
               note="spatial and temporal blocks run whole; their attention (a frame's patches, a patch's frames), "
                    "text cross-attention queries and feed-forward are split inside each block"),
]
