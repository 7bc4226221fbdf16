"""Architectures of the embedded models, and loading their committed weights."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load_file

from ..schedule import DiffusionSchedule

ASSETS = Path(__file__).parent / "assets"
UNET_FILE = ASSETS / "digits_unet.safetensors"
CLASSIFIER_FILE = ASSETS / "digits_classifier.safetensors"

# 1-channel 16×16 DDPM. Attention at 8×8 and 4×4 so the "attention" LoRA preset has targets.
UNET_CONFIG: dict = dict(
    sample_size=16,
    in_channels=1,
    out_channels=1,
    layers_per_block=1,
    block_out_channels=(32, 64, 64),
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    norm_num_groups=8,
    attention_head_dim=32,
)
# The reference's MNIST schedule: 1000 steps, β linear 1e-4 → 0.02.
SCHEDULE_CONFIG: dict = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")


def digits_schedule() -> DiffusionSchedule:
    """The DDPM schedule the digits UNet was trained with (``SCHEDULE_CONFIG``)."""
    return DiffusionSchedule.linear(SCHEDULE_CONFIG["num_train_timesteps"], SCHEDULE_CONFIG["beta_start"],
                                    SCHEDULE_CONFIG["beta_end"])


def build_unet():
    from diffusers import UNet2DModel

    return UNet2DModel(**UNET_CONFIG)


def load_unet(device: str | torch.device = "cpu"):
    """The committed base model (eval mode, requires_grad off)."""
    if not UNET_FILE.exists():
        raise FileNotFoundError(f"{UNET_FILE} is missing: run `python -m tools.train_digits unet` to rebuild it")
    m = build_unet()
    m.load_state_dict(load_file(str(UNET_FILE)))
    return m.to(device).eval().requires_grad_(False)


class DigitClassifier(nn.Module):
    """Small CNN on [B, 1, 16, 16] images in [-1, 1]; returns logits [B, 10]."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.GELU(), nn.Conv2d(32, 32, 3, padding=1), nn.GELU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.GELU(), nn.Conv2d(64, 64, 3, padding=1), nn.GELU(), nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.3), nn.Linear(64 * 4 * 4, 128), nn.GELU(), nn.Linear(128, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def load_classifier(device: str | torch.device = "cpu") -> DigitClassifier:
    if not CLASSIFIER_FILE.exists():
        raise FileNotFoundError(
            f"{CLASSIFIER_FILE} is missing: run `python -m tools.train_digits classifier` to rebuild it"
        )
    m = DigitClassifier()
    m.load_state_dict(load_file(str(CLASSIFIER_FILE)))
    return m.to(device).eval().requires_grad_(False)
