"""Fixtures shared by every test; the helpers themselves live in ``papa_testkit``."""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: spinning threads stall 2 cores

import pytest  # noqa: E402

from papa_core.denoiser import DiffusersDenoiser  # noqa: E402
from papa_core.lora import LoraConfig  # noqa: E402
from papa_core.schedule import DiffusionSchedule  # noqa: E402
from papa_testkit import pack  # noqa: E402
from papa_testkit.models import tiny_unet2d  # noqa: E402


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


@pytest.fixture
def isolated_store(tmp_path, monkeypatch):
    """The pack's session store in ``tmp_path/sessions`` (and ComfyUI's loras folder in ``tmp_path/loras``)
    for one test; yields the pack's ``state`` module."""
    return pack.isolated_store(tmp_path, monkeypatch)
