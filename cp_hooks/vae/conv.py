"""Convolutions on a slab: the unchanged layer on the slab, its rows next to an interior edge redone with halos.

One generic mechanism for every convolution-like layer (plain `Conv2d`/`Conv3d`, diffusers' causal 3-D
convolutions with their temporal caches, padded stride-2 downsamplers): the layer is treated as a black box
that maps global input rows to global output rows like a convolution of kernel reach `k_eff = (k-1)*d`,
stride `s` and top padding `p` — output row `o` reads input rows `s*o - p ... s*o - p + k_eff`. For the
output rows of this rank's slab, `[start/s, stop/s)`, it needs `up = p` rows above and
`down = k_eff - p - s + 1` rows below its input slab. The wrapper

1. fetches `hT = ceil(up/s)*s` rows from the rank above (a multiple of `s`, so that a window starting there
   is still on the stride's phase) and `hB = down` rows from the rank below (`halo.py`) — also for every
   other tensor argument of the slab's height (Wan's and CogVideoX's temporal caches are slabs too, cached
   per rank by the unchanged parent code);
2. calls the layer's own forward on the slab as it is: its own padding (zeros, replicate, the causal time
   padding, a `ZeroPad2d` before a stride-2 conv) applies at the slab's edges — right at the global edges
   (rank 0's top, the last rank's bottom), wrong only for the `ceil(p/s)` output rows at an interior top
   edge and the few at an interior bottom edge that read past it;
3. recomputes those rows from two small windows (halo rows + the slab rows they read; the layer's own
   forward again) and writes them into the output in place.

No copy of the slab is made, so a rank's memory is the whole image's divided by the ranks. A slab too thin
for the windows (one or two rows, at the latent resolution) instead runs once on the slab with its halo
rows concatenated and cuts the output rows that read the fake padding — also exact. Redundant work: the
windows, a few rows per layer.

The "unit" wrapped is the module that owns the height padding: the conv itself when its `padding` covers
height, else its parent that pads
(table `_PADDING_OWNERS`). A conv whose height padding is done by a module we do not know is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from cp_hooks.vae import slab
from cp_hooks.vae.halo import extend_with_halo, fetch_halo


class UnsupportedLayer(TypeError):
    """A layer of the VAE whose row geometry the slab split cannot follow exactly."""


@dataclass(frozen=True)
class RowGeometry:
    """How a conv-like unit maps input rows to output rows (see the module docstring)."""

    reach: int  # (kernel - 1) * dilation along height
    stride: int
    pad_top: int

    @property
    def halo_top(self) -> int:
        """Rows fetched above: `ceil(pad_top / stride) * stride` (keeps the stride phase)."""
        return math.ceil(self.pad_top / self.stride) * self.stride

    @property
    def halo_bottom(self) -> int:
        """Rows fetched below."""
        return max(0, self.reach - self.pad_top - self.stride + 1)


def _h(value) -> int:
    """The height component of a conv attribute (int or tuple; height is the second-to-last entry)."""
    return value if isinstance(value, int) else value[-2]


def _conv_geometry(conv: nn.Module, pad_top: int) -> RowGeometry:
    return RowGeometry(reach=(_h(conv.kernel_size) - 1) * _h(conv.dilation), stride=_h(conv.stride), pad_top=pad_top)


def _first_conv(module: nn.Module):
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            return m
    return None


def _sequential_zero_pad(m):
    children = list(m.children())
    if len(children) == 2 and isinstance(children[0], nn.ZeroPad2d) and isinstance(children[1], nn.Conv2d):
        return children[0].padding[2]  # (left, right, top, bottom)
    return None


# Modules that pad height themselves before an inner conv with no height padding: class name -> top padding
# (None: this instance does not pad, look at its children). The unit is then the module, not its conv.
_PADDING_OWNERS = {
    "Downsample2D": lambda m: 0 if getattr(m, "padding", None) == 0 and getattr(m, "use_conv", False) else None,
    "WanCausalConv3d": lambda m: m._padding[2],  # (w, w, h, h, 2t, 0); its conv padding was zeroed
    "QwenImageCausalConv3d": lambda m: m._padding[2],
    "HunyuanVideoCausalConv3d": lambda m: m.time_causal_padding[2],
    "CogVideoXCausalConv3d": lambda m: m.time_causal_padding[2] if m.pad_mode == "replicate" else None,
    "CogVideoXDownsample3D": lambda m: 0,  # F.pad (0, 1, 0, 1) then a stride-2 conv
    "Sequential": _sequential_zero_pad,
}


def find_units(root: nn.Module) -> dict[nn.Module, RowGeometry]:
    """Every conv-like unit of `root` that reads rows of its neighbours, with its geometry.

    Args:
        root: the VAE (or any module tree).

    Returns:
        module -> geometry, for units whose halo is not empty (1x1 and (k,1,1) convs are local).

    Raises:
        UnsupportedLayer: a conv with a height kernel > 1 and no height padding of its own, under no module
            whose padding we know.
    """
    units: dict[nn.Module, RowGeometry] = {}

    def visit(module: nn.Module, name: str) -> None:
        owner = _PADDING_OWNERS.get(type(module).__name__)
        pad_top = owner(module) if owner is not None else None
        if pad_top is not None:
            conv = module if isinstance(module, (nn.Conv2d, nn.Conv3d)) else _first_conv(module)
            if conv is not None:
                geometry = _conv_geometry(conv, pad_top + _h(conv.padding))
                if geometry.halo_top or geometry.halo_bottom:
                    units[module] = geometry
                return
        if isinstance(module, (nn.Conv2d, nn.Conv3d)):
            if isinstance(module.padding, str):
                raise UnsupportedLayer(f"{name}: string padding {module.padding!r}")
            geometry = _conv_geometry(module, _h(module.padding))
            if geometry.reach and not _h(module.padding):
                raise UnsupportedLayer(
                    f"{name} ({type(module).__name__}): a height kernel of "
                    f"{geometry.reach + 1} with its padding done by an unknown parent"
                )
            if geometry.halo_top or geometry.halo_bottom:
                units[module] = geometry
            return
        for child_name, child in module.named_children():
            visit(child, f"{name}.{child_name}" if name else child_name)

    visit(root, "")
    return units


def make_unit_forward(module: nn.Module, geometry: RowGeometry, inner):
    """A forward for `module` that gives its slab's output rows exactly as on the whole image.

    Two exact ways, chosen per call by the slab's height:
    * edge windows (a slab that is tall compared with the kernel): the layer runs once on the slab as it is
      — every output row is right except the few next to an interior edge, which read the layer's padding
      instead of the neighbour's rows — and those rows are recomputed from two small windows (halo rows plus
      the slab rows they need) and written in place. No copy of the slab: the memory is the whole image's
      divided by the ranks.
    * extended slab (a thin slab, e.g. at the latent resolution): the layer runs once on the slab with its
      halo rows concatenated, and the rows that read the fake padding are cut off.

    Args:
        module: the unit.
        geometry: its row geometry.
        inner: the callable the module ran before (its class's bound forward, or an earlier instance forward).

    Returns:
        The replacement forward (installed as an instance attribute by `api.py`).
    """
    s, p, reach = geometry.stride, geometry.pad_top, geometry.reach

    def call(args, kwargs, slots, tensors):
        args, kwargs = list(args), dict(kwargs)
        for (kind, i), t in zip(slots, tensors):
            if kind == "a":
                args[i] = t
            else:
                kwargs[i] = t
        out = inner(*args, **kwargs)
        return out, (out[0] if isinstance(out, tuple) else out)

    def forward(*args, **kwargs):
        layout = slab.current()
        if layout is None or not args or not torch.is_tensor(args[0]):
            return inner(*args, **kwargs)
        x = args[0]
        height = x.shape[-2]
        start, stop, sizes = layout.rows(height)
        last = layout.rank == layout.world - 1
        top = geometry.halo_top if layout.rank > 0 else 0
        bottom = geometry.halo_bottom if not last else 0

        # The slab's other tensors of the same height (temporal caches) take the same rows, so the layer's own
        # concatenation along time sees matching heights.
        def same_slab(t):
            return torch.is_tensor(t) and t.ndim == x.ndim and t.shape[-2] == height

        slots = [("a", i) for i, a in enumerate(args) if same_slab(a)]
        slots += [("k", k) for k, v in kwargs.items() if same_slab(v)]
        tensors = [args[i] if kind == "a" else kwargs[i] for kind, i in slots]
        keep = (stop - start) // s
        n_top = -(-p // s) if top else 0  # outputs that read rows above the slab
        top_rows = s * (n_top - 1) - p + reach + 1  # slab rows those outputs read
        first_bad = -(-(stop + p - reach) // s) if bottom else stop // s  # first output reading rows below
        window_start = s * (first_bad - -(-p // s))  # stride-aligned, covers that output's top padding
        if top_rows <= height and window_start >= start and n_top <= first_bad - start // s:
            # The same exchange as the other path (a rank's neighbours may take either path).
            halos = fetch_halo(tensors, geometry.halo_top, geometry.halo_bottom, layout, sizes)
            out, first = call(args, kwargs, [], [])
            if not last:
                first = first[..., :keep, :]
            if n_top:
                _, fixed = call(
                    args,
                    kwargs,
                    slots,
                    [torch.cat([above, t[..., :top_rows, :]], dim=-2) for t, (above, _) in zip(tensors, halos)],
                )
                first[..., :n_top, :] = fixed[..., top // s : top // s + n_top, :]
            if bottom and first_bad < stop // s:
                _, fixed = call(
                    args,
                    kwargs,
                    slots,
                    [
                        torch.cat([t[..., window_start - start :, :], below], dim=-2)
                        for t, (_, below) in zip(tensors, halos)
                    ],
                )
                lo = first_bad - window_start // s
                first[..., first_bad - start // s :, :] = fixed[..., lo : lo + stop // s - first_bad, :]
        else:
            extended = extend_with_halo(tensors, geometry.halo_top, geometry.halo_bottom, layout, sizes)
            out, first = call(args, kwargs, slots, extended)
            first = first[..., top // s : top // s + keep, :] if not last else first[..., top // s :, :]
        return (first,) + tuple(out[1:]) if isinstance(out, tuple) else first

    forward.__name__ = "forward"
    forward.__qualname__ = f"cp_hooks.vae.conv.unit_forward[{type(module).__name__}]"
    return forward
