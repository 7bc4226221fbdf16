"""The ComfyUI integration tests' server (needs COMFYUI_DIR); the server itself is ``papa_testkit.comfy``."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from papa_testkit.comfy import comfy_dir, running_server


@pytest.fixture(scope="session")
def comfy(tmp_path_factory):
    cdir = comfy_dir()
    if cdir is None:
        pytest.skip("set COMFYUI_DIR to a ComfyUI checkout (0.3.64) to run the ComfyUI integration tests")
    base = tmp_path_factory.mktemp("comfy")
    try:
        with running_server(base, cdir) as server:
            yield server
    finally:
        keep = os.environ.get("PAPA_TEST_ARTIFACTS")
        if keep and (base / "comfyui.log").exists():
            shutil.copy(base / "comfyui.log", Path(keep) / "comfyui.log")
