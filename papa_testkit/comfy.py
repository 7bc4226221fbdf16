"""A real ComfyUI server with this pack, for the integration tests and benchmarks (needs COMFYUI_DIR).

The server runs from the ComfyUI checkout with ``--base-directory`` set to a temporary folder
holding ``custom_nodes/ComfyUI-PAPA`` (a link to this repository), a random-weight SD1.5-format
checkpoint (built once by ``build_checkpoint.py`` and cached), ``models/loras`` and the user folder.
Where the Python lacks a working torchvision (CPU torch 2.13 here), a stub from ``stubs/`` is put
on the server's PYTHONPATH: ComfyUI imports torchvision at start-up but SD1.5 never calls it.

Scripts that import ComfyUI's own modules run with ``comfy_env(cdir)``: ComfyUI's folder first on
PYTHONPATH (its ``nodes.py`` before this repository's ``nodes/``), then this repository.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

from .graphs import CKPT
from .pack import ROOT as REPO
from .servers import free_port, stop
HERE = Path(__file__).resolve().parent


def comfy_dir() -> Path | None:
    d = os.environ.get("COMFYUI_DIR")
    if d and (Path(d) / "main.py").exists():
        return Path(d)
    return None


def _needs_stub() -> bool:
    r = subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True)
    return r.returncode != 0


def server_env(cdir: Path | None = None) -> dict:
    """The environment of a ComfyUI process; with ``cdir``, ComfyUI's modules and then this repository's
    are importable (for scripts run by path with cwd = ``cdir``)."""
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", PYTHONUNBUFFERED="1")
    paths = [str(HERE / "stubs")] if _needs_stub() else []
    if cdir is not None:
        paths += [str(cdir), str(REPO)]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [*paths, env.get("PYTHONPATH")]))
    return env


def cached_checkpoint(cdir: Path) -> Path:
    cache = Path(os.environ.get("PAPA_TEST_CACHE", Path.home() / ".cache" / "comfyui-papa-tests"))
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / CKPT
    if not path.exists():
        tmp = path.with_suffix(".tmp.safetensors")
        # as a module, not by path: run by path, its own folder would be searched first for imports and this
        # package's comfy.py would hide ComfyUI's ``comfy``
        r = subprocess.run([sys.executable, "-m", "papa_testkit.build_checkpoint", str(tmp)], cwd=cdir,
                           env=server_env(cdir), capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"building the test checkpoint failed:\n{r.stderr[-3000:]}")
        tmp.rename(path)
    return path


class ComfyServer:
    def __init__(self, base: Path, port: int, proc: subprocess.Popen, log: Path):
        self.base, self.port, self.proc, self.log = base, port, proc, log
        self.url = f"http://127.0.0.1:{port}"
        self.client_id = uuid.uuid4().hex

    # --- HTTP ---
    def request(self, method: str, path: str, body=None, raw: bytes | None = None, timeout: float = 30):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                payload = r.read()
                status = r.status
        except urllib.error.HTTPError as e:
            payload, status = e.read(), e.code
        try:
            return status, json.loads(payload)
        except json.JSONDecodeError:
            return status, payload

    def get(self, path: str):
        return self.request("GET", path)

    def post(self, path: str, body=None, raw: bytes | None = None):
        return self.request("POST", path, body, raw)

    def queue(self, graph: dict) -> str:
        status, r = self.post("/prompt", {"prompt": graph, "client_id": self.client_id})
        assert status == 200, f"prompt rejected: {r}"
        return r["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 600) -> dict:
        t0 = time.time()
        while time.time() - t0 < timeout:
            status, h = self.get(f"/history/{prompt_id}")
            if status == 200 and prompt_id in h and h[prompt_id].get("status", {}).get("completed") is not None:
                entry = h[prompt_id]
                if entry["status"].get("status_str") in ("success", "error"):
                    return entry
            assert self.proc.poll() is None, f"ComfyUI exited; log:\n{self.log.read_text()[-4000:]}"
            time.sleep(0.3)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout} s")

    def run(self, graph: dict, timeout: float = 600) -> dict:
        return self.wait(self.queue(graph), timeout)

    def image(self, info: dict):
        import numpy as np
        from PIL import Image
        import io

        q = urllib.parse.urlencode({"filename": info["filename"], "subfolder": info["subfolder"], "type": info["type"]})
        with urllib.request.urlopen(f"{self.url}/view?{q}", timeout=30) as r:
            return np.asarray(Image.open(io.BytesIO(r.read())).convert("RGB"), dtype=np.int16)


def error_message(entry: dict) -> str:
    for kind, data in entry["status"].get("messages", []):
        if kind == "execution_error":
            return data.get("exception_message", "")
    return ""


def cached_nodes(entry: dict) -> list[str]:
    for kind, data in entry["status"].get("messages", []):
        if kind == "execution_cached":
            return list(data.get("nodes", []))
    return []


@contextlib.contextmanager
def running_server(base: Path, cdir: Path, extra_args: tuple[str, ...] = (), gpu: bool | None = None):
    """A ComfyUI server with this pack under ``base`` (created here); yields a ComfyServer. It runs on the
    CPU unless ``gpu`` (default: ``PAPA_TEST_DEVICE=gpu`` in the environment, as benchmarks/gpu_check.sh sets)."""
    gpu = os.environ.get("PAPA_TEST_DEVICE") == "gpu" if gpu is None else gpu
    (base / "custom_nodes").mkdir(parents=True)
    os.symlink(REPO, base / "custom_nodes" / "ComfyUI-PAPA")
    for sub in ("models/checkpoints", "models/loras", "output", "input", "temp", "user"):
        (base / sub).mkdir(parents=True)
    os.symlink(cached_checkpoint(cdir), base / "models" / "checkpoints" / CKPT)
    port = free_port()
    log = base / "comfyui.log"
    cmd = [sys.executable, "main.py", *([] if gpu else ["--cpu"]), "--listen", "127.0.0.1", "--port", str(port), "--base-directory",
           str(base), "--disable-auto-launch", *extra_args]
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, cwd=cdir, env=server_env(), stdout=f, stderr=subprocess.STDOUT)
    server = ComfyServer(base, port, proc, log)
    try:
        t0 = time.time()
        while True:
            try:
                status, _ = server.get("/object_info/PAPA_Session")
                if status == 200:
                    break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if proc.poll() is not None or time.time() - t0 > 180:
                raise RuntimeError(f"ComfyUI did not start; log:\n{log.read_text()[-4000:]}")
            time.sleep(0.5)
        yield server
    finally:
        stop(proc, 20)


