"""Tiny random VAEs and inputs for the VAE-parallelism tests and benchmark (nothing downloaded)."""

from __future__ import annotations

import torch


def build_vae(name: str):
    """A tiny diffusers VAE of family `name`, random weights (seeded), eval mode."""
    import diffusers as d

    torch.manual_seed(0)
    if name == "kl":
        vae = d.AutoencoderKL(block_out_channels=(8, 16), layers_per_block=1, latent_channels=4, norm_num_groups=4,
                              down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
    elif name == "kl3":  # three levels: stride-2 downsamplers at two resolutions, attention in the mid block
        vae = d.AutoencoderKL(block_out_channels=(8, 8, 16), layers_per_block=1, latent_channels=4, norm_num_groups=4,
                              down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3)
    elif name == "flux2":
        vae = d.AutoencoderKLFlux2(block_out_channels=(8, 16), layers_per_block=1, latent_channels=4,
                                   norm_num_groups=4, down_block_types=("DownEncoderBlock2D",) * 2,
                                   up_block_types=("UpDecoderBlock2D",) * 2)
    elif name == "wan21":
        vae = d.AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 1, 2], num_res_blocks=1,
                                 temperal_downsample=[False, True])
    elif name == "wan22":
        vae = d.AutoencoderKLWan(base_dim=8, decoder_base_dim=8, z_dim=4, dim_mult=[1, 2, 2], num_res_blocks=1,
                                 temperal_downsample=[False, True], is_residual=True, patch_size=2,
                                 in_channels=12, out_channels=12, scale_factor_spatial=8, scale_factor_temporal=2)
    elif name == "qwen":
        vae = d.AutoencoderKLQwenImage(base_dim=8, z_dim=4, dim_mult=[1, 1, 2], num_res_blocks=1,
                                       temperal_downsample=[False, True])
    elif name == "hunyuan":
        vae = d.AutoencoderKLHunyuanVideo(latent_channels=4, down_block_types=("HunyuanVideoDownBlock3D",) * 3,
                                          up_block_types=("HunyuanVideoUpBlock3D",) * 3, block_out_channels=(8, 8, 16),
                                          layers_per_block=1, norm_num_groups=4, spatial_compression_ratio=4,
                                          temporal_compression_ratio=4)
    elif name == "ltx":
        vae = d.AutoencoderKLLTXVideo(latent_channels=4, block_out_channels=(8, 8, 16, 16),
                                      decoder_block_out_channels=(8, 8, 16, 16), layers_per_block=(1, 1, 1, 1, 1),
                                      decoder_layers_per_block=(1, 1, 1, 1, 1),
                                      spatio_temporal_scaling=(True, True, False, False),
                                      decoder_spatio_temporal_scaling=(True, True, False, False))
    elif name == "cog":
        vae = d.AutoencoderKLCogVideoX(down_block_types=("CogVideoXDownBlock3D",) * 3,
                                       up_block_types=("CogVideoXUpBlock3D",) * 3, block_out_channels=(8, 8, 16),
                                       latent_channels=4, layers_per_block=1, norm_num_groups=4,
                                       temporal_compression_ratio=4)
    elif name == "mochi":
        vae = d.AutoencoderKLMochi(latent_channels=4, encoder_block_out_channels=(32, 32, 32, 32),
                                   decoder_block_out_channels=(32, 32, 32, 32), layers_per_block=(1, 1, 1, 1, 1))
    else:
        raise KeyError(name)
    return vae.eval()


def latent_shape(name: str, rows: int, cols: int = 3, frames: int = 2) -> tuple[int, ...]:
    """The latent shape of a `rows x cols` latent (video VAEs: `frames` latent frames)."""
    if name in ("kl", "kl3", "flux2"):
        return (1, 4, rows, cols)
    return (1, 4, frames, rows, cols)


def image_shape(vae, name: str, rows: int, cols: int = 3, frames: int = 5) -> tuple[int, ...]:
    """An image/video shape whose latent is `rows x cols`."""
    from cp_hooks.vae.api import spatial_compression

    f = spatial_compression(vae)
    channels = 3
    if name in ("kl", "kl3", "flux2"):
        return (1, channels, rows * f, cols * f)
    return (1, channels, frames, rows * f, cols * f)
