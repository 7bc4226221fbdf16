"""Run by ComfyUI-Manager after cloning (and by the webui): install requirements.txt without ever
touching torch.

The installer may not upgrade, downgrade or replace the host's torch: the installed version is
passed as a constraint (and requirements.txt never lists torch). It uses what the environment has:
pip, or else uv (venvs made by uv come without pip); with neither, it says what to run. Where every
requirement is already installed (ComfyUI-Manager installs requirements.txt itself before running
this), it installs nothing. Safe to run again.
"""
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def requirement_names() -> list[str]:
    with open(os.path.join(HERE, "requirements.txt"), encoding="utf-8") as f:
        lines = [ln.split("#")[0].strip() for ln in f]
    return [re.split(r"[<>=!~\[; ]", ln, maxsplit=1)[0] for ln in lines if ln]


def missing_requirements() -> list[str]:
    missing = []
    for name in requirement_names():
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    return missing


def installer() -> "list[str] | None":
    """The command that installs into this Python: pip if it has pip, else uv; None when neither."""
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip", "install"]
    uv = shutil.which("uv")
    if uv:
        return [uv, "pip", "install", "--python", sys.executable]
    return None


def main() -> int:
    missing = missing_requirements()
    if not missing:
        print("[ComfyUI-PAPA] every requirement is installed; nothing to do")
        return 0
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
    base = installer()
    if base is None:
        print(f"[ComfyUI-PAPA] missing {', '.join(missing)}, and this Python ({sys.executable}) has neither pip nor "
              "uv: install them with your environment's package manager, keeping its torch", file=sys.stderr)
        return 1
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(pins) + "\n")
        constraints = f.name
    try:
        cmd = base + ["-r", os.path.join(HERE, "requirements.txt"), "-c", constraints]
        print("[ComfyUI-PAPA]", " ".join(cmd))
        return subprocess.call(cmd)
    finally:
        os.unlink(constraints)


if __name__ == "__main__":
    sys.exit(main())
