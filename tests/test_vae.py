"""Patch-parallel VAE decode/encode equals one process (cp_hooks.vae, docs/vae.md).

Every case builds the same tiny random VAE on every rank, computes the one-process reference before enabling,
and compares each rank's parallel result with it: fp32 max|diff| / max(1, max|ref|) <= 1e-5, bf16 <= 3e-2.
Many cases run inside one pool task (spawning ranks costs seconds).
"""

from __future__ import annotations

import pytest
import torch

from vae_cases import build_vae, image_shape, latent_shape

TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 3e-2}


def _rel(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.float() - ref.float()).abs().max() / max(1.0, ref.float().abs().max().item())).item()


def parity_cases(cases, dtype_name: str = "float32") -> list[str]:
    """Run (family, latent rows, what) cases on this rank; return one line per case; raise on a mismatch."""
    import torch.distributed as dist

    from cp_hooks import comm
    from cp_hooks.vae import disable_vae_parallelism, enable_vae_parallelism

    dtype = getattr(torch, dtype_name)
    tol = TOLERANCE[dtype]
    lines, failures = [], []
    for name, rows, what in cases:
        vae = build_vae(name)
        vae = vae if dtype == torch.float32 else vae.to(dtype)
        torch.manual_seed(1)
        if what == "decode":
            inp = torch.randn(latent_shape(name, rows), dtype=dtype)
            run = lambda: vae.decode(inp).sample  # noqa: E731
        else:
            inp = torch.randn(image_shape(vae, name, rows), dtype=dtype)
            run = lambda: torch.cat([vae.encode(inp).latent_dist.mean, vae.encode(inp).latent_dist.std])  # noqa: E731
        with torch.no_grad():
            ref = run()
            enable_vae_parallelism(vae)
            with comm.comm_stats() as stats:
                out = run()
            disable_vae_parallelism(vae)
            again = run()
        err = _rel(out, ref)
        halo = stats.payload_sent.get("vae_halo", 0)
        line = f"{name} {what} rows={rows} world={dist.get_world_size()} {dtype_name}: rel={err:.2e} halo={halo}B"
        lines.append(line)
        # Split (halo traffic) exactly when every rank has a latent row; else the whole decode on every rank.
        split = rows >= dist.get_world_size()
        if (out.shape != ref.shape or not torch.isfinite(ref).all() or not err <= tol or not torch.equal(again, ref)
                or (halo > 0) != split):
            failures.append(f"{line} shape {tuple(out.shape)} vs {tuple(ref.shape)} "
                            f"restored={torch.equal(again, ref)}")
    if failures:
        raise AssertionError("\n".join(failures))
    return lines


IMAGE = [("kl", 5, "decode"), ("kl", 3, "encode"), ("kl3", 7, "decode"), ("kl3", 5, "encode"),
         ("flux2", 5, "decode"), ("flux2", 4, "encode")]
CAUSAL3D = [("hunyuan", 5, "decode"), ("hunyuan", 4, "encode"), ("ltx", 5, "decode"), ("ltx", 4, "encode"),
            ("cog", 5, "decode"), ("cog", 4, "encode"), ("mochi", 5, "decode"), ("mochi", 4, "encode")]
VIDEO = [("wan21", 5, "decode"), ("wan21", 4, "encode"), ("wan22", 5, "decode"), ("wan22", 4, "encode"),
         ("qwen", 5, "decode"), ("qwen", 3, "encode")]


@pytest.mark.parametrize("world", [2, 4])
def test_image_vaes(pool, world):
    print("\n".join(pool(world).run(parity_cases, IMAGE)[0]))


@pytest.mark.parametrize("world", [2, 4])
def test_video_vaes(pool, world):
    print("\n".join(pool(world).run(parity_cases, VIDEO)[0]))


# Too small to split (fewer latent rows than ranks): the whole decode/encode on every rank, same result.
SMALL = [("kl", 1, "decode"), ("kl", 1, "encode"), ("wan21", 1, "decode")]
BF16 = [("kl3", 5, "decode"), ("kl", 5, "encode"), ("wan21", 5, "decode"), ("qwen", 5, "decode"),
        ("hunyuan", 5, "decode")]


def restore_and_tiling() -> list[str]:
    """disable restores the module exactly; tiling on: every rank's result equals one process's tiled result."""
    import torch.distributed as dist

    from cp_hooks.vae import disable_vae_parallelism, enable_vae_parallelism, is_vae_parallel

    lines = []
    for name in ("kl3", "wan21"):
        vae = build_vae(name)
        before_state = {k: v.clone() for k, v in vae.state_dict().items()}
        before_dicts = {n: dict(m.__dict__) for n, m in vae.named_modules()}
        processors = {n: m.processor for n, m in vae.named_modules() if hasattr(m, "processor")}
        enable_vae_parallelism(vae)
        assert is_vae_parallel(vae)
        enable_vae_parallelism(vae)  # twice: re-enables, does not stack
        disable_vae_parallelism(vae)
        assert not is_vae_parallel(vae)
        for n, m in vae.named_modules():
            assert set(m.__dict__) == set(before_dicts[n]), (n, set(m.__dict__) ^ set(before_dicts[n]))
            assert m.forward.__name__ == type(m).forward.__name__ and m.forward.__func__ is type(m).forward, n
            if n in processors:
                assert m.processor is processors[n], n
        assert "_decode" not in vae.__dict__ and "_encode" not in vae.__dict__
        after = vae.state_dict()
        assert before_state.keys() == after.keys() and all(torch.equal(before_state[k], after[k]) for k in after)
        lines.append(f"{name}: restored")

    import diffusers

    from cp_hooks.vae import UnsupportedVAEError, supports_vae
    tiny = diffusers.AutoencoderTiny(encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8))
    assert isinstance(supports_vae(tiny), str)
    with pytest.raises(UnsupportedVAEError, match="AutoencoderTiny"):
        enable_vae_parallelism(tiny)
    assert not is_vae_parallel(tiny) and "forward" not in tiny.__dict__
    lines.append("AutoencoderTiny: refused")

    vae = build_vae("kl3")
    vae.enable_tiling()
    vae.tile_sample_min_size, vae.tile_latent_min_size, vae.tile_overlap_factor = 16, 4, 0.25
    torch.manual_seed(2)
    z = torch.randn(1, 4, 7, 6)
    x = torch.randn(1, 3, 24, 24)
    with torch.no_grad():
        ref, ref_enc = vae.decode(z).sample, vae.encode(x).latent_dist.mean
        enable_vae_parallelism(vae)
        out, out_enc = vae.decode(z).sample, vae.encode(x).latent_dist.mean
        disable_vae_parallelism(vae)
    assert torch.equal(out, ref) and torch.equal(out_enc, ref_enc)
    lines.append(f"tiling: whole tiled decode/encode on each of {dist.get_world_size()} ranks, identical")
    return lines


def halo_formula(name: str, rows: int) -> list[int]:
    """comm_stats' halo and norm bytes equal the formulas of docs/vae.md (counted from each unit's input)."""
    import torch.distributed as dist

    from cp_hooks import comm
    from cp_hooks.vae import enable_vae_parallelism
    from cp_hooks.vae.conv import find_units
    from cp_hooks.vae.norm import find_group_norms

    world, rank = dist.get_world_size(), dist.get_rank()
    vae = build_vae(name)
    expected = {"halo": 0, "norm": 0}

    def count_halo(geometry):
        def hook(module, args):
            x = args[0]
            row_bytes = sum(a.numel() // a.shape[-2] * a.element_size() for a in args
                            if torch.is_tensor(a) and a.ndim == x.ndim and a.shape[-2] == x.shape[-2])
            rows_sent = (geometry.halo_bottom if rank > 0 else 0) + (geometry.halo_top if rank < world - 1 else 0)
            expected["halo"] += rows_sent * row_bytes
        return hook

    def count_norm(module, args):
        expected["norm"] += 3 * 8 * args[0].shape[0] * module.num_groups * (world - 1)

    for module, geometry in find_units(vae).items():
        module.register_forward_pre_hook(count_halo(geometry))
    for module in find_group_norms(vae):
        module.register_forward_pre_hook(count_norm)
    enable_vae_parallelism(vae)
    torch.manual_seed(1)
    with torch.no_grad(), comm.comm_stats() as stats:
        vae.decode(torch.randn(latent_shape(name, rows)))
    got = [stats.payload_sent["vae_halo"], stats.payload_sent["vae_norm"]]
    assert got == [expected["halo"], expected["norm"]], (got, expected)
    return got


@pytest.mark.parametrize("world", [2, 4])
def test_too_small_falls_back_to_whole(pool, world):
    pool(world).run(parity_cases, SMALL)


def test_bf16(pool):
    print("\n".join(pool(2).run(parity_cases, BF16, "bfloat16")[0]))


def test_disable_restores_and_tiling(pool):
    print("\n".join(pool(2).run(restore_and_tiling)[0]))


@pytest.mark.parametrize("world", [2, 4])
def test_comm_stats_formula(pool, world):
    pool(world).run(halo_formula, "kl3", 5)
    pool(world).run(halo_formula, "wan21", 5)


@pytest.mark.parametrize("world", [2, 4])
def test_causal_3d_vaes(pool, world):
    print("\n".join(pool(world).run(parity_cases, CAUSAL3D, timeout=600)[0]))
