"""benchmarks/update_speed.py's part (e): the default update through ComfyUI's own model (toy width)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from papa_testkit.comfy import comfy_dir

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("mode", ["round", "pairs"])
def test_update_speed_through_comfyui_model(mode):
    cdir = comfy_dir()
    if cdir is None:
        pytest.skip("set COMFYUI_DIR to a ComfyUI checkout (0.3.64) to time the update through ComfyUI's model")
    # round mode runs PAPA's update on ComfyDenoiser for real and asserts its pass counts equal the
    # counter's (what pairs mode extrapolates from); pairs mode also times the passes in fp32.
    out = subprocess.run([sys.executable, "-m", "benchmarks.update_speed", "--arch", "tiny", "--latent", "8",
                          "--images", "2", "--ref-timesteps", "1", "--b-mode", mode, "--parts", "ae",
                          "--autocast", "bf16"], capture_output=True, text=True, timeout=600, cwd=REPO,
                         env=dict(os.environ, COMFYUI_DIR=str(cdir), OMP_WAIT_POLICY="PASSIVE"))
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    rounds = [ln for ln in lines if ln.startswith("(e) default through ComfyUI's model (bf16), round ")]
    assert len(rounds) == 2 and all(("(measured)" if mode == "round" else "in fp32") in ln for ln in rounds)
    ratio = next(ln for ln in lines if ln.startswith("(a)/(e):"))
    assert all(float(x) > 1 for x in re.findall(r"(\d+\.\d)x", ratio))  # cheaper than the exact sum
    assert re.search(r"\(e\) peak \d+\.\d\d GiB.*\d+ LoRA parameters", out.stdout)
