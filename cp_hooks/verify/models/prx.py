"""PRX (PRXTransformer2DModel): image queries attend to [text, image] keys; text and image both split.

The text is keys and values only (each block projects it, it is never updated), but it shares one attention
call with the image keys, so it must be split too, or each rank would count every text key once. Each rank
then attends its image queries to [its text keys, its image keys]; the order of keys does not matter, and
the processor's key-padding mask (the text mask followed by ones for the local image tokens) stays aligned
with them when the text mask is split with the text. Both are split once, at the model's input (the text
projection `txt_in` is per token, and every block receives the same split text and mask).

The image is split after its patch projection (`img_in`, one linear layer or PRX-7B's two-layer
bottleneck), the rotary table (computed by `pe_embedder` for the whole grid, (B, 1, S, D/2, 2, 2)) with it,
and the tokens are gathered at `final_layer`, before `seq2img`.

The blocks' modulation starts at zero in diffusers (a freshly built model would ignore its blocks and the
forward check would prove nothing), so the catalogue's tiny model draws it again from the seed (`redraw`).
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import padding_mask, randn
from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput

_TOKENS = ContextParallelInput(split_dim=1, expected_dims=3)

PRX = {
    "": {
        "encoder_hidden_states": _TOKENS,
        "attention_mask": ContextParallelInput(split_dim=1, expected_dims=2),
    },
    "img_in": {0: ContextParallelInput(split_dim=1, expected_dims=3, split_output=True)},
    "pe_embedder": {0: ContextParallelInput(split_dim=2, expected_dims=6, split_output=True)},
    "final_layer": ContextParallelOutput(gather_dim=1, expected_dims=3),
}


_PRX = dict(in_channels=4, patch_size=2, context_in_dim=24, hidden_size=64, mlp_ratio=2.0, num_heads=4, depth=2,
            axes_dim=[8, 8])
# PRX-7B (pixel space): a two-layer bottleneck patch projection and resolution-aware modulation.
_PIXEL = dict(in_channels=3, bottleneck_size=16, resolution_embeds=True)


def _prx(config, g, text=8, valid=(3, 8), height=8, width=12):
    # CFG batch [negative, positive]: the T5Gemma tokenizer pads to max_length, a bool mask marks the prompt.
    batch = len(valid)
    return dict(
        hidden_states=randn(g, batch, config["in_channels"], height, width),
        timestep=torch.full((batch,), 0.6),
        encoder_hidden_states=randn(g, batch, text, config["context_in_dim"]),
        attention_mask=padding_mask(batch, text, list(valid)),
        return_dict=False,
    )


ENTRIES = [
    ModelEntry("PRXTransformer2DModel", PRX, _PRX,
               {"t2i": _prx, "pixel": _prx},
               case_configs={"pixel": _PIXEL}, redraw=("blocks.*.modulation.lin.*",),
               note="image queries over [text, image] keys, both split with the padded text mask (CFG batch); "
                    "PRX-7B pixel-space bottleneck and resolution embedding"),
]
