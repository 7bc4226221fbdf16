"""Tiny random-weight models for the engine tests (no download, CPU, seconds)."""
from __future__ import annotations

import torch


def tiny_unet2d(num_class_embeds=None, seed: int = 0):
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    return UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 16),
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                       norm_num_groups=4, attention_head_dim=8, num_class_embeds=num_class_embeds).eval()


def tiny_sd_unet(seed: int = 0, cross_attention_dim: int = 32):
    """SD-shaped (cross-attention transformer blocks, 1×1-conv proj_in/out) but tiny."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim, attention_head_dim=4, norm_num_groups=8, use_linear_projection=False,
    ).eval()


def randomize_lora(denoiser, seed: int = 1, scale: float = 0.1) -> None:
    """Make ΔW ≠ 0 (peft starts up at zero), so LoRA-on and LoRA-off differ."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in denoiser.lora_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
