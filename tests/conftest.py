"""Tiny random-weight models for the engine tests (no download, CPU, seconds)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: spinning threads stall 2 cores

import pytest  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from papa_core.denoiser import DiffusersDenoiser  # noqa: E402
from papa_core.lora import LoraConfig  # noqa: E402
from papa_core.schedule import DiffusionSchedule  # noqa: E402


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


@pytest.fixture
def schedule():
    return DiffusionSchedule.linear(1000, 1e-4, 0.02)


@pytest.fixture
def small_schedule():
    """T = 50: keeps exact sums cheap in tests."""
    return DiffusionSchedule.linear(50, 1e-3, 0.2)


@pytest.fixture
def tiny_denoiser(small_schedule):
    return DiffusersDenoiser(tiny_unet2d(), small_schedule, LoraConfig(rank=4, alpha=4.0, targets="attention+conv"))


def randomize_lora(denoiser, seed: int = 1, scale: float = 0.1) -> None:
    """Make ΔW ≠ 0 (peft starts up at zero), so LoRA-on and LoRA-off differ."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in denoiser.lora_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)


def load_pack():
    """Import the repository as the ComfyUI node pack (package ``comfyui_papa``), as ComfyUI does."""
    import importlib.util

    if "comfyui_papa" in sys.modules:
        return sys.modules["comfyui_papa"]
    spec = importlib.util.spec_from_file_location("comfyui_papa", ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["comfyui_papa"] = mod
    spec.loader.exec_module(mod)
    return mod
