"""Convolutions on a slab: run the unchanged layer on the slab plus halo rows, keep the exact rows.

One generic mechanism for every convolution-like layer (plain `Conv2d`/`Conv3d`, diffusers' causal 3-D
convolutions with their temporal caches, padded stride-2 downsamplers): the layer is treated as a black box
that maps global input rows to global output rows like a convolution of kernel reach `k_eff = (k-1)*d`,
stride `s` and top padding `p` — output row `o` reads input rows `s*o - p ... s*o - p + k_eff`. For the
output rows of this rank's slab, `[start/s, stop/s)`, it needs `up = p` rows above and
`down = k_eff - p - s + 1` rows below its input slab. The wrapper

1. fetches `hT = ceil(up/s)*s` rows above (a multiple of `s`, so the extended slab still starts on a row of
   the stride's phase: local output j is global output `(start - hT)/s + j`) and `hB = down` rows below
   (`halo.py`) — also for every other tensor argument of the slab's height (Wan's and CogVideoX's
   temporal caches are slabs too, cached per rank by the unchanged parent code);
2. calls the layer's own forward on the extended slab: its own padding (zeros, replicate, the causal time
   padding, a `ZeroPad2d` before a stride-2 conv) applies at the extended slab's edges — which are the
   global edges on rank 0 / the last rank, and halo-covered elsewhere;
3. drops the `hT/s` output rows at the top and any rows past `stop/s`: those read the fake padding.

The redundant work is the halo rows only (one or two rows per layer). The "unit" wrapped is the module that
owns the height padding: the conv itself when its `padding` covers height, else its parent that pads
(table `_PADDING_OWNERS`). A conv whose height padding is done by a module we do not know is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from cp_hooks.vae import slab
from cp_hooks.vae.halo import extend_with_halo


class UnsupportedLayer(TypeError):
    """A layer of the VAE whose row geometry the slab split cannot follow exactly."""


@dataclass(frozen=True)
class RowGeometry:
    """How a conv-like unit maps input rows to output rows (see the module docstring)."""

    reach: int   # (kernel - 1) * dilation along height
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
        return children[0].padding[2]   # (left, right, top, bottom)
    return None


# Modules that pad height themselves before an inner conv with no height padding: class name -> top padding
# (None: this instance does not pad, look at its children). The unit is then the module, not its conv.
_PADDING_OWNERS = {
    "Downsample2D": lambda m: 0 if getattr(m, "padding", None) == 0 and getattr(m, "use_conv", False) else None,
    "WanCausalConv3d": lambda m: m._padding[2],          # (w, w, h, h, 2t, 0); its conv padding was zeroed
    "QwenImageCausalConv3d": lambda m: m._padding[2],
    "HunyuanVideoCausalConv3d": lambda m: m.time_causal_padding[2],
    "CogVideoXCausalConv3d": lambda m: m.time_causal_padding[2] if m.pad_mode == "replicate" else None,
    "CogVideoXDownsample3D": lambda m: 0,                 # F.pad (0, 1, 0, 1) then a stride-2 conv
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
                raise UnsupportedLayer(f"{name} ({type(module).__name__}): a height kernel of "
                                       f"{geometry.reach + 1} with its padding done by an unknown parent")
            if geometry.halo_top or geometry.halo_bottom:
                units[module] = geometry
            return
        for child_name, child in module.named_children():
            visit(child, f"{name}.{child_name}" if name else child_name)

    visit(root, "")
    return units


def make_unit_forward(module: nn.Module, geometry: RowGeometry, inner):
    """A forward for `module` that runs `inner` (its previous forward) on the halo-extended slab.

    Args:
        module: the unit.
        geometry: its row geometry.
        inner: the callable the module ran before (its class's bound forward, or an earlier instance forward).

    Returns:
        The replacement forward (installed as an instance attribute by `api.py`).
    """

    def forward(*args, **kwargs):
        layout = slab.current()
        if layout is None or not args or not torch.is_tensor(args[0]):
            return inner(*args, **kwargs)
        x = args[0]
        height = x.shape[-2]
        start, stop, sizes = layout.rows(height)
        top = geometry.halo_top if layout.rank > 0 else 0
        bottom = geometry.halo_bottom if layout.rank < layout.world - 1 else 0
        # The slab's other tensors of the same height (temporal caches) are extended the same way, so the
        # layer's own concatenation along time sees matching heights.
        slots = [("a", i) for i, a in enumerate(args) if torch.is_tensor(a) and a.ndim == x.ndim and a.shape[-2] == height]
        slots += [("k", k) for k, v in kwargs.items() if torch.is_tensor(v) and v.ndim == x.ndim and v.shape[-2] == height]
        args, kwargs = list(args), dict(kwargs)
        extended = extend_with_halo([args[i] if kind == "a" else kwargs[i] for kind, i in slots],
                                    geometry.halo_top, geometry.halo_bottom, layout, sizes)
        for (kind, i), t in zip(slots, extended):
            if kind == "a":
                args[i] = t
            else:
                kwargs[i] = t
        out = inner(*args, **kwargs)
        first = out[0] if isinstance(out, tuple) else out
        s = geometry.stride
        keep_from = top // s
        if layout.rank < layout.world - 1:
            first = first[..., keep_from: keep_from + (stop - start) // s, :]
        else:
            first = first[..., keep_from:, :]
        return (first,) + tuple(out[1:]) if isinstance(out, tuple) else first

    forward.__name__ = "forward"
    forward.__qualname__ = f"cp_hooks.vae.conv.unit_forward[{type(module).__name__}]"
    return forward
