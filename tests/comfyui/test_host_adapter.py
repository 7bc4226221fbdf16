"""The host adapter (nodes/comfy_*.py) against ComfyUI's own model classes (SD1.5 ε, SD2 v-prediction, SDXL)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from papa_testkit.comfy import comfy_dir, server_env

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    cdir = comfy_dir()
    if cdir is None:
        pytest.skip("set COMFYUI_DIR to a ComfyUI checkout (0.3.64) to run the ComfyUI host-adapter checks")
    env = dict(server_env(cdir), PAPA_CHECK_TMP=str(tmp_path_factory.mktemp("adapter")))
    r = subprocess.run([sys.executable, str(HERE / "check_host_adapter.py")], cwd=cdir, env=env, capture_output=True,
                       text=True, timeout=600)
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    assert r.returncode == 0 and line, r.stderr[-4000:]
    return json.loads(line[0][len("RESULT "):])


@pytest.mark.parametrize("kind, family, prediction, naming", [
    ("sd15", "SD15", "eps", "diffusers"), ("sd2v", "SD20", "v", "diffusers"), ("sdxl", "SDXL", "eps", "ldm")])
def test_host_adapter(results, kind, family, prediction, naming):
    r = results[kind]
    assert (r["family"], r["prediction"], r["naming"]) == (family, prediction, naming)
    # ε at DDPM step t = the UNet's own ε (ε-models) or the ε its v implies (v-models)
    assert r["eps_err"] < 1e-4
    if kind == "sdxl":
        assert r["cond_shapes"]["y"] == [3, 2816]  # pooled text + size embedding, as ComfyUI's sampler builds it
    # the trainable wrappers, the frozen snapshot and the exported file loaded by ComfyUI agree
    assert r["lora_effect"] > 1e-5
    assert r["snapshot_err"] < 1e-5
    assert r["keys_not_loaded"] == 0 and r["export_err"] < 1e-4
    # sampling goes through ComfyUI's own LoRA patching: equal to the exported file bit for bit
    assert r["snapshot_equals_file"] and r["snapshot_wrappers"] == 0 and r["patches_replaced"]
    # gradients reach every LoRA tensor under ComfyUI's inference mode; checkpointing recomputes, same grads
    assert r["grad_all_finite_nonzero"]
    assert r["ckpt_recomputes"] >= 1 and r["ckpt_grad_err"] < 1e-5
    # ...and only them: the host's weights (Parameters that require grad) get no gradient
    assert r["base_params_with_grad"] == 0
    assert r["host_unchanged"]
