"""Segmented splits: one tensor holding several token streams back to back, each split like its own tokens.

A joint-attention block attends over [its image shard, its text shard]; a key mask or table that `forward`
builds once over the whole [image, text] sequence must be cut the same way: `ContextParallelInput(segments=
("image", "text"))`, with the streams' full lengths recorded by their tagged splits. A None segment is a
stream already local (kept whole). Checked against one process (fp32, relative 1e-5) with lengths the ranks
do not divide (anything flags), on 2 and 3 ranks, Ulysses and ring, forward and backward; and the errors.
"""

import pytest
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from cp_hooks import (
    ContextParallelInput,
    ContextParallelOutput,
    disable_parallelism,
    enable_parallelism,
    reduce_gradients,
)
from cp_testing import FP32_TOL, make_config, rel_err

DIM, HEADS = 16, 2


class JointBlock(nn.Module):
    """Attention over [image, text] with a key mask and a per-token bias over the same joint sequence."""

    def __init__(self):
        super().__init__()
        self.qkv_img, self.qkv_txt = nn.Linear(DIM, 3 * DIM), nn.Linear(DIM, 3 * DIM)
        self.out = nn.Linear(DIM, DIM)

    def forward(self, image, text, key_mask, bias):
        b, s_img = image.shape[:2]
        joint = torch.cat([self.qkv_img(image), self.qkv_txt(text)], dim=1) + bias  # bias: (B, S_img + S_txt, 3D)
        q, k, v = (t.view(b, -1, HEADS, DIM // HEADS).transpose(1, 2) for t in joint.chunk(3, dim=-1))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask).transpose(1, 2).reshape(b, -1, DIM)
        out = self.out(out)
        return image + out[:, :s_img], text + out[:, s_img:]


class TwoStreamModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList(JointBlock() for _ in range(2))
        self.bias = nn.Linear(DIM, 3 * DIM)
        self.head = nn.Linear(DIM, DIM)

    def forward(self, image, text, image_valid, text_valid):
        # Built once over the whole [image, text] sequence and handed to every block.
        key_mask = torch.cat([image_valid, text_valid], dim=1)[:, None, None, :]
        bias = self.bias(torch.cat([image, text], dim=1))
        for block in self.blocks:
            image, text = block(image, text, key_mask, bias)
        # [image, text] again, whose text part is already local after the blocks: a None segment.
        return self.head(image), torch.cat([image_valid.float()[..., None].expand(-1, -1, DIM), text], dim=1)


PLAN = {
    "blocks.0": {"image": ContextParallelInput(split_dim=1, expected_dims=3, tag="image"),
                 "text": ContextParallelInput(split_dim=1, expected_dims=3, tag="text")},
    "blocks.*": {"key_mask": ContextParallelInput(split_dim=3, expected_dims=4, segments=("image", "text")),
                 "bias": ContextParallelInput(split_dim=1, expected_dims=3, segments=("image", "text"))},
    "head": ContextParallelOutput(gather_dim=1, expected_dims=3),
}
# The second output, [whole image validity, local text]: split its image part, gather the whole.
PLAN_WITH_LOCAL_SEGMENT = {**PLAN, "": {1: ContextParallelInput(split_dim=1, expected_dims=3, split_output=True,
                                                               segments=("image", None))}}


def _inputs(s_img=7, s_txt=5, batch=2):
    g = torch.Generator().manual_seed(0)
    image_valid = torch.ones(batch, s_img, dtype=torch.bool)
    image_valid[1, -2:] = False  # a padded image in the second sample
    text_valid = torch.ones(batch, s_txt, dtype=torch.bool)
    text_valid[0, -3:] = False  # a padded prompt in the first
    return dict(image=torch.randn(batch, s_img, DIM, generator=g), text=torch.randn(batch, s_txt, DIM, generator=g),
                image_valid=image_valid, text_valid=text_valid)


def segmented_matches_one_process(ring, ulysses):
    torch.manual_seed(0)
    model, inputs = TwoStreamModel(), _inputs()
    ref_inputs = {k: v.clone().requires_grad_(v.is_floating_point()) for k, v in inputs.items()}
    ref = model(**ref_inputs)[0]
    ref.square().sum().backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    config = make_config(ring=ring, ulysses=ulysses, ulysses_anything=ulysses > 1, ring_anything=ring > 1)
    enable_parallelism(model, config, plan=PLAN)
    cp_inputs = {k: v.clone().requires_grad_(v.is_floating_point()) for k, v in inputs.items()}
    out = model(**cp_inputs)[0]
    out.square().sum().backward()
    reduce_gradients(model, config)
    for key in ("image", "text"):
        dist.all_reduce(cp_inputs[key].grad)  # each rank holds the partial gradient of its tokens
    disable_parallelism(model)
    errors = {"output": rel_err(out, ref)}
    errors.update({n: rel_err(p.grad, ref_grads[n]) for n, p in model.named_parameters()})
    errors.update({f"input {k}": rel_err(cp_inputs[k].grad, ref_inputs[k].grad) for k in ("image", "text")})
    return max(errors.items(), key=lambda item: item[1])


@pytest.mark.parametrize("world,ring,ulysses", [(2, 1, 2), (2, 2, 1), (3, 1, 3), (3, 3, 1)])
def test_segmented_split_matches_one_process(pool, world, ring, ulysses):
    for name, err in pool(world).run(segmented_matches_one_process, ring, ulysses):
        assert err <= FP32_TOL, f"{name}: {err:.2e}"


def local_segment_kept_whole():
    torch.manual_seed(0)
    model, inputs = TwoStreamModel(), _inputs()
    with torch.no_grad():
        full = model(**inputs)[1]
        enable_parallelism(model, make_config(ulysses=dist.get_world_size(), ulysses_anything=True),
                           plan=PLAN_WITH_LOCAL_SEGMENT)
        local = model(**inputs)[1]
        disable_parallelism(model)
    rank, world, s_img = dist.get_rank(), dist.get_world_size(), inputs["image"].shape[1]
    image_part = full[:, :s_img].tensor_split(world, dim=1)[rank]
    text_part = full[:, s_img:].tensor_split(world, dim=1)[rank]  # the text output was local already
    return rel_err(local, torch.cat([image_part, text_part], dim=1))


def test_local_segment_is_kept_whole(pool):
    assert max(pool(2).run(local_segment_kept_whole)) <= FP32_TOL


def segment_errors():
    model, inputs = TwoStreamModel(), _inputs()
    untagged = {**PLAN, "blocks.0": {"image": ContextParallelInput(split_dim=1, expected_dims=3),
                                     "text": ContextParallelInput(split_dim=1, expected_dims=3, tag="text")}}
    config = make_config(ulysses=dist.get_world_size(), ulysses_anything=True)
    messages = []
    for plan, kwargs in ((untagged, {}), (PLAN, dict(image=inputs["image"][:, :6], image_valid=inputs["image_valid"]))):
        enable_parallelism(model, config, plan=plan)
        try:
            with torch.no_grad():
                model(**{**inputs, **kwargs})
        except ValueError as error:
            messages.append(str(error))
        finally:
            disable_parallelism(model)
    return messages


def test_segment_errors_on_every_rank(pool):
    for messages in pool(2).run(segment_errors):
        assert len(messages) == 2
        assert "no split tagged ['image'] ran earlier" in messages[0]
        assert "do not add up" in messages[1]


@pytest.mark.parametrize("kwargs,error", [
    (dict(segments=["image"]), TypeError),
    (dict(segments=()), TypeError),
    (dict(segments=(None, None)), ValueError),
    (dict(segments=("image",), tag="joint"), ValueError),
])
def test_malformed_segment_specs(kwargs, error):
    with pytest.raises(error):
        ContextParallelInput(split_dim=1, **kwargs)
