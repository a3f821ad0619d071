"""Verification of the bria family's plans (`cp_hooks.plans.bria`, where each plan's reasons are): tiny configs, the
input cases of its pipelines.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import grid_ids, padding_mask, randn

_BRIA = dict(
    patch_size=1,
    in_channels=16,
    num_layers=1,
    num_single_layers=1,
    attention_head_dim=16,
    num_attention_heads=4,
    joint_attention_dim=32,
    axes_dims_rope=(4, 6, 6),
)


def _bria(config, g, text=8, height=4, width=6, cfg=True):
    batch = 2 if cfg else 1  # [negative, positive] in one batch
    ids = grid_ids(height, width, lead=1)
    return dict(
        hidden_states=randn(g, batch, height * width, config["in_channels"]),
        encoder_hidden_states=randn(g, batch, text, config["joint_attention_dim"]),
        timestep=torch.full((batch,), 700.0),
        img_ids=ids[None].repeat(batch, 1, 1),
        txt_ids=torch.zeros(batch, text, 3),
        return_dict=False,
    )


_FIBO = dict(_BRIA, text_encoder_dim=24)


def _fibo(config, g, text=9, height=3, width=5, references=(), batch=1):
    img_ids = grid_ids(height, width, lead=1)
    tokens = [randn(g, batch, height * width, config["in_channels"])]
    for index, (h, w) in enumerate(references, start=1):  # the edit pipeline's references, first id = index
        ref_ids = grid_ids(h, w, lead=1)
        ref_ids[:, 0] = index
        img_ids = torch.cat([img_ids, ref_ids])
        tokens.append(randn(g, batch, h * w, config["in_channels"]))
    layers = config["num_layers"] + config["num_single_layers"]
    return dict(
        hidden_states=torch.cat(tokens, dim=1),
        encoder_hidden_states=randn(g, batch, text, config["joint_attention_dim"]),
        text_encoder_layers=[randn(g, batch, text, config["text_encoder_dim"]) for _ in range(layers)],
        timestep=torch.full((batch,), 700.0),
        img_ids=img_ids,
        txt_ids=torch.zeros(text, 3),
        return_dict=False,
    )


_FIBO2 = dict(
    in_channels=4,
    patch_size=2,
    dim=64,
    n_layers=2,
    n_refiner_layers=1,
    n_heads=4,
    cap_feat_dim=24,
    injection_layer_ids=(1,),
    perceiver_num_layers=1,
    min_num_gist_tokens=2,
    max_num_gist_tokens=6,
    gist_step=2,
    gist_min_text_len=2,
    gist_max_text_len=12,
    axes_dims=(4, 6, 6),
    axes_lens=(16, 16, 16),
)


def _fibo2(config, g, text=9, valid=None, height=6, width=10, context=()):
    batch = len(valid) if valid else 1
    bundles = 1 + len(config["injection_layer_ids"])  # the Perceiver's, then one per injection block
    inputs = dict(
        hidden_states=randn(g, batch, config["in_channels"], height, width),
        timestep=torch.full((batch,), 0.7),
        encoder_hidden_states=randn(g, batch, bundles, text, config["cap_feat_dim"]),
        return_dict=False,
    )
    if valid:  # a batch of prompts padded to the longest: different gist counts, so the gist is padded too
        inputs["encoder_attention_mask"] = padding_mask(batch, text, list(valid))
    if context:  # the images to edit, each of its own size
        inputs["context_latents"] = [randn(g, batch, config["in_channels"], h, w) for h, w in context]
    return inputs


ENTRIES = [
    ModelEntry(
        "BriaTransformer2DModel",
        config=_BRIA,
        cases={"t2i": _bria},
        note="batched (B, S, 3) ids; negative and positive prompt in one batch",
    ),
    ModelEntry(
        "BriaFiboTransformer2DModel",
        config=_FIBO,
        cases={
            "t2i": _fibo,
            "edit": lambda c, g: _fibo(c, g, references=((3, 3),)),
            "cfg": lambda c, g: _fibo(c, g, batch=2),
        },
        anything=True,
        note="per-block text-encoder layers split with the text; edit references; without the CFG "
        "joint [text, image] padding mask (see the family file)",
    ),
    ModelEntry(
        "BriaFibo2Transformer2DModel",
        config=_FIBO2,
        cases={
            "t2i": _fibo2,
            "prompts": lambda c, g: _fibo2(c, g, valid=(9, 3)),
            "edit": lambda c, g: _fibo2(c, g, context=((4, 6),)),
        },
        anything=True,
        redraw=("layers.*.cross_attn_gate",),
        note="noise refiner and main blocks each split at their first block and gathered at their last "
        "(.-1); batch of padded prompts with padded gist tokens; edit images; injection cross-attention",
    ),
]
