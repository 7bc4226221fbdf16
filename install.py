"""Run by ComfyUI-Manager after cloning: install requirements.txt without ever touching torch.

pip may not upgrade, downgrade or replace the host's torch: the installed version is passed as a
constraint (and requirements.txt never lists torch). Safe to run again.
"""
import importlib.metadata
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> int:
    pins = []
    for pkg in ("torch", "torchvision", "torchaudio", "numpy"):
        try:
            pins.append(f"{pkg}=={importlib.metadata.version(pkg)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    if not any(p.startswith("torch==") for p in pins):
        print("[ComfyUI-PAPA] torch is not installed in this Python; install ComfyUI (with its torch) first",
              file=sys.stderr)
        return 1
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(pins) + "\n")
        constraints = f.name
    try:
        cmd = [sys.executable, "-m", "pip", "install", "-r", os.path.join(HERE, "requirements.txt"), "-c", constraints]
        print("[ComfyUI-PAPA]", " ".join(cmd))
        return subprocess.call(cmd)
    finally:
        os.unlink(constraints)


if __name__ == "__main__":
    sys.exit(main())
