"""A real Stable Diffusion WebUI Forge server on the CPU with this extension, for the webui tests.

Skipped unless ``FORGE_DIR`` points at a Forge checkout whose launcher repositories are in place
(``repositories/``) and whose Python (``FORGE_PYTHON``, default ``FORGE_DIR/venv/bin/python``) has
Forge's requirements. The checkout is not changed: the server runs with its own ``--data-dir``
(extensions/papa → this repository, models, LoRA folder) and ``PAPA_SESSION_DIR`` in a temporary
folder, on a random-weight SD1.5 checkpoint built with Forge's own classes; nothing is downloaded.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from papa_testkit.servers import free_port, stop

ROOT = Path(__file__).resolve().parents[2]
START_S = 300  # CPU start-up seen here: ~20 s; generous for a loaded CI machine


class Forge:
    def __init__(self, url: str, data: Path, log: Path) -> None:
        self.url, self.data, self.log = url, data, log
        self.loras = data / "models" / "Lora"
        self.sessions = data / "papa_sessions"

    def post(self, path: str, body: dict, timeout: float = 600) -> tuple[int, dict]:
        req = urllib.request.Request(self.url + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")


@pytest.fixture(scope="session")
def forge(tmp_path_factory):
    fdir = os.environ.get("FORGE_DIR")
    if not fdir:
        pytest.skip("set FORGE_DIR to a Stable Diffusion WebUI Forge checkout (and FORGE_PYTHON to its venv's python) "
                    "to run the webui tests; see the README's 'Use in Forge'")
    fdir = Path(fdir).resolve()
    python = os.environ.get("FORGE_PYTHON") or str(fdir / "venv" / "bin" / "python")
    if not (fdir / "launch.py").is_file() or not Path(python).exists():
        pytest.skip(f"no Forge at {fdir} or no Python at {python} (set FORGE_PYTHON)")
    data = tmp_path_factory.mktemp("forge_data")
    (data / "extensions").mkdir()
    (data / "extensions" / "papa").symlink_to(ROOT)
    ckpt = data / "models" / "Stable-diffusion" / "papa_tiny_sd15.safetensors"
    ckpt.parent.mkdir(parents=True)
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{fdir / 'packages_3rdparty'}", OMP_WAIT_POLICY="PASSIVE",
               PAPA_SESSION_DIR=str(data / "papa_sessions"))
    subprocess.run([python, "-m", "papa_testkit.build_forge_checkpoint", str(ckpt)], cwd=fdir, env=env, check=True,
                   capture_output=True)
    env.pop("PYTHONPATH")
    port = free_port()
    log = data / "forge.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([python, "launch.py", "--skip-prepare-environment", "--skip-install", "--always-cpu",
                                 "--api", "--skip-torch-cuda-test", "--skip-version-check", "--no-download-sd-model",
                                 "--port", str(port), "--data-dir", str(data), "--ckpt", str(ckpt),
                                 "--lora-dir", str(data / "models" / "Lora"),
                                 # with --data-dir gradio serves only that folder: the UI's own scripts and
                                 # this extension's (a symlink) must be allowed too, or the page has no Generate
                                 "--gradio-allowed-path", str(fdir), "--gradio-allowed-path", str(ROOT)], cwd=fdir, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + START_S
        while True:
            try:
                with urllib.request.urlopen(url + "/sdapi/v1/options", timeout=5):
                    break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail(f"Forge did not start; its log:\n{log.read_text(errors='replace')[-4000:]}")
                time.sleep(2)
        yield Forge(url, data, log)
    finally:
        stop(proc, 30)
