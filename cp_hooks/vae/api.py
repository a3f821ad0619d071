"""Enable / disable patch-parallel decode and encode on a diffusers VAE.

`enable_vae_parallelism(vae)` wraps the VAE's `_decode` and `_encode` (the methods `decode`/`encode` call
per batch slice) and patches its layers in place:

* conv-like units (`conv.py`): halo rows from the neighbours, the layer's own padding at the global edges;
* `nn.GroupNorm` (`norm.py`): statistics reduced over the ranks;
* the mid-block spatial attention (`attention.py`): keys and values of every rank's rows;
* everything else (activations, per-position norms, nearest upsampling, space<->depth reshapes, the causal
  time caches) runs unchanged on the slab, which the aligned layout (`slab.py`) makes exact.

`_decode(z)` takes this rank's rows of `z` (piece `rank` of `tensor_split(world)` along height), runs the
unchanged method on them with the layout active, and all-gathers the output rows, so every rank returns
the whole image. `_encode(x)` does the same with the image rows of its latent rows (`x` height must be
`latent rows x spatial compression`). Every patch is an instance attribute (a module's `forward`, an
attention processor, the VAE's `_decode`/`_encode`) recorded with what it replaced; `disable` puts each
back, so the module's `__dict__`, state dict and outputs are as before.

Falls back to the whole decode/encode on every rank (same result as one process, no saving) when:
the latent has fewer rows than ranks (or an image height is not a multiple of the compression factor), or
diffusers' tiling is on (`vae.use_tiling`): the tiles' seams are blended by diffusers, so the tiled result
is reproduced exactly by running the tiled decode itself on every rank rather than approximated.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from cp_hooks import comm
from cp_hooks.vae import slab
from cp_hooks.vae.attention import (
    LOCAL_PROCESSORS,
    SPATIAL_PROCESSORS,
    WAN_ATTENTION_CLASSES,
    SlabAttnProcessor,
    make_wan_attention_forward,
)
from cp_hooks.vae.conv import UnsupportedLayer, find_units, make_unit_forward
from cp_hooks.vae.norm import find_group_norms, make_group_norm_forward

logger = logging.getLogger("cp_hooks.vae")

OUTPUT_PAYLOAD = "vae_output"
_STATE = "_cp_hooks_vae_parallel"
_MISSING = object()

# Classes whose every layer has been checked against one process (tests/test_vae.py): decode and encode.
SUPPORTED_CLASSES = {
    "AutoencoderKL": "decode, encode",
    "AutoencoderKLFlux2": "decode, encode",
    "AutoencoderKLWan": "decode, encode (2.1 and 2.2)",
    "AutoencoderKLQwenImage": "decode, encode",
    "AutoencoderKLHunyuanVideo": "decode, encode",
    "AutoencoderKLLTXVideo": "decode, encode",
    "AutoencoderKLCogVideoX": "decode, encode",
    "AutoencoderKLMochi": "decode, encode",
}

# Known classes that are not supported yet, and why (docs/vae.md lists them too).
UNSUPPORTED_REASONS: dict[str, str] = {}

# Configurations of supported classes that cannot be split exactly: class name -> config -> reason or None.
_CONFIG_REFUSALS = {
    # LTX 0.9.1's decoder adds noise drawn with the shape of the feature map: a slab's draw is not the rows of
    # the whole map's draw, so the result would differ from one process (it is random, but not the same).
    "AutoencoderKLLTXVideo": lambda config: (
        "decoder noise injection (decoder_inject_noise) draws noise of the slab's shape, not the whole map's"
        if any(getattr(config, "decoder_inject_noise", ()) or ())
        else None
    ),
}


class UnsupportedVAEError(TypeError):
    """`enable_vae_parallelism` was asked to split a VAE whose layers it cannot split exactly."""


def supports_vae(vae: nn.Module) -> bool | str:
    """Whether `enable_vae_parallelism` can split `vae` exactly.

    Args:
        vae: a diffusers autoencoder.

    Returns:
        True, or a sentence saying why not.
    """
    name = type(vae).__name__
    if name not in SUPPORTED_CLASSES:
        return UNSUPPORTED_REASONS.get(
            name,
            f"{name} is not among the VAE classes verified for patch-parallel "
            f"decode ({', '.join(sorted(SUPPORTED_CLASSES))})",
        )
    refusal = _CONFIG_REFUSALS.get(name, lambda config: None)(vae.config)
    if refusal:
        return f"{name}: {refusal}"
    try:
        find_units(vae)
    except UnsupportedLayer as e:
        return f"{name}: {e}"
    for module_name, module in vae.named_modules():
        processor = getattr(module, "processor", None)
        if processor is not None and hasattr(module, "to_q"):
            kind = type(processor).__name__
            if kind not in SPATIAL_PROCESSORS + LOCAL_PROCESSORS + ("SlabAttnProcessor",):
                return f"{name}: attention {module_name} uses processor {kind}, which has no slab form"
    return True


def spatial_compression(vae: nn.Module) -> int:
    """Image rows per latent row of `vae`."""
    config: Any = vae.config  # diffusers' FrozenDict (nn.Module's __getattr__ is typed Tensor | Module)
    if hasattr(config, "temperal_downsample"):  # Wan, QwenImage: one 2x per level (+ Wan 2.2's patchify)
        return 2 ** len(config.temperal_downsample) * (getattr(config, "patch_size", None) or 1)
    ratio = getattr(vae, "spatial_compression_ratio", None)
    if ratio is None:  # AutoencoderKL, Flux2: one 2x per level but the last
        ratio = 2 ** (len(config.block_out_channels) - 1)
    return int(ratio)


def _split(rows: int, world: int) -> tuple[int, ...]:
    """Row counts of `tensor_split(world)` of `rows` rows (the first ranks hold one more)."""
    q, r = divmod(rows, world)
    return tuple([q + 1] * r + [q] * (world - r))


def _layout(vae, latent_rows: int) -> slab.SlabLayout | None:
    state = getattr(vae, _STATE)
    group = state["group"]
    world = group.size()
    if world == 1:
        return None
    if getattr(vae, "use_tiling", False):
        if not state.get("warned_tiling"):
            logger.info(
                "cp_hooks: %s has tiling on: every rank runs diffusers' whole tiled decode/encode (the "
                "tiles' blending is reproduced exactly, not split)",
                type(vae).__name__,
            )
            state["warned_tiling"] = True
        return None
    if latent_rows < world:
        logger.debug("cp_hooks: %d latent rows for %d ranks: whole decode/encode on every rank", latent_rows, world)
        return None
    return slab.SlabLayout(group=group, rank=group.rank(), world=world, units=_split(latent_rows, world))


def _replace_output(out, full: torch.Tensor):
    if isinstance(out, tuple):
        return (full,) + tuple(out[1:])
    if torch.is_tensor(out):
        return full
    out.sample = full  # diffusers' DecoderOutput (a BaseOutput: attribute and key stay in step)
    return out


def _output_tensor(out):
    if isinstance(out, tuple):
        return out[0]
    return out if torch.is_tensor(out) else out.sample


def _make_decode(vae, inner):
    @functools.wraps(inner)
    def _decode(z, *args, **kwargs):
        layout = _layout(vae, z.shape[-2])
        if layout is None:
            with slab.active(None):
                return inner(z, *args, **kwargs)
        start, stop, _ = layout.rows(layout.units[layout.rank])  # latent rows of this rank
        with slab.active(layout):
            out = inner(z[..., start:stop, :], *args, **kwargs)
        local = _output_tensor(out)
        _, _, sizes = layout.rows(local.shape[-2])
        # Every rank returns the whole image, as without parallelism: gather the output rows.
        full = comm.all_gather(local.contiguous(), sizes, layout.group, dim=local.ndim - 2, payload=OUTPUT_PAYLOAD)
        return _replace_output(out, full)

    return _decode


def _make_encode(vae, inner):
    @functools.wraps(inner)
    def _encode(x, *args, **kwargs):
        factor = spatial_compression(vae)
        height = x.shape[-2]
        layout = _layout(vae, height // factor) if height % factor == 0 else None
        if layout is None:
            with slab.active(None):
                return inner(x, *args, **kwargs)
        start, stop, _ = layout.rows(layout.units[layout.rank])
        with slab.active(layout):
            out = inner(x[..., start * factor : stop * factor, :], *args, **kwargs)
        local = _output_tensor(out)
        full = comm.all_gather(
            local.contiguous(), list(layout.units), layout.group, dim=local.ndim - 2, payload=OUTPUT_PAYLOAD
        )
        return _replace_output(out, full)

    return _encode


def _install(state, module: nn.Module, attr: str, make):
    previous = module.__dict__.get(attr, _MISSING)
    inner = previous if previous is not _MISSING else getattr(module, attr)
    patched = make(inner)
    module.__dict__[attr] = patched  # an instance attribute shadows the class's method until disable
    state["patches"].append((module, attr, previous, patched))


def enable_vae_parallelism(vae: nn.Module, group=None) -> nn.Module:
    """Split `vae.decode` / `vae.encode` over the ranks of `group` by image rows, exactly.

    Every rank must call `decode`/`encode` with the same input (as a pipeline does after sampling); each
    computes its slab of rows plus halos and returns the whole result.

    Args:
        vae: a diffusers autoencoder of a supported class (`supports_vae`).
        group: the process group (default: the whole world).

    Returns:
        `vae`, patched in place. Enabling twice re-enables over the new group.

    Raises:
        RuntimeError: no process group is initialised.
        UnsupportedVAEError: the class (or one of its layers) cannot be split exactly.
    """
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            "enable_vae_parallelism needs an initialised process group: launch with torchrun or "
            "accelerate launch (or call torch.distributed.init_process_group)"
        )
    reason = supports_vae(vae)
    if reason is not True:
        raise UnsupportedVAEError(f"cp_hooks cannot split this VAE exactly: {reason}")
    if getattr(vae, _STATE, None) is not None:
        disable_vae_parallelism(vae)
    state: dict[str, Any] = {"group": dist.group.WORLD if group is None else group, "patches": [], "processors": []}
    for module, geometry in find_units(vae).items():
        _install(state, module, "forward", functools.partial(make_unit_forward, module, geometry))
    for module in find_group_norms(vae):
        _install(state, module, "forward", functools.partial(make_group_norm_forward, module))
    for module in vae.modules():
        if type(module).__name__ in WAN_ATTENTION_CLASSES:
            _install(state, module, "forward", functools.partial(make_wan_attention_forward, module))
        elif hasattr(module, "to_q") and type(getattr(module, "processor", None)).__name__ in SPATIAL_PROCESSORS:
            state["processors"].append((module, module.processor))
            # nn.Module.__setattr__ takes any value; torch's stub types it Tensor | Module.
            module.processor = SlabAttnProcessor(module.processor)  # type: ignore[assignment]
    _install(state, vae, "_decode", functools.partial(_make_decode, vae))
    _install(state, vae, "_encode", functools.partial(_make_encode, vae))
    vae.__dict__[_STATE] = state
    return vae


def disable_vae_parallelism(vae: nn.Module) -> nn.Module:
    """Undo `enable_vae_parallelism`: every patched forward, processor and method is put back.

    Args:
        vae: the VAE (a VAE that was never enabled is returned unchanged).

    Returns:
        `vae`.
    """
    state = vae.__dict__.pop(_STATE, None)
    if state is None:
        return vae
    for module, attr, previous, patched in reversed(state["patches"]):
        if module.__dict__.get(attr) is not patched:
            logger.warning(
                "cp_hooks: %s.%s was replaced after VAE parallelism was enabled; leaving it",
                type(module).__name__,
                attr,
            )
            continue
        if previous is _MISSING:
            del module.__dict__[attr]
        else:
            module.__dict__[attr] = previous
    for module, processor in reversed(state["processors"]):
        module.processor = processor
    return vae


def is_vae_parallel(vae: nn.Module) -> bool:
    """Whether `enable_vae_parallelism` is in effect on `vae`."""
    return _STATE in vae.__dict__
