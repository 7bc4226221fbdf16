"""Exporting a session: a validated name inside the host's loras folder, and the kohya file with the
session's training metadata. No host imports (ComfyUI and Forge pass their loras folder)."""
from __future__ import annotations

import re
from pathlib import Path

import torch

from .errors import PapaError
from .lora_io import export_lora
from .session import Session
from .summary import summarize

# one path segment: what every OS and LoRA loader handles without quoting
SEGMENT = r"[A-Za-z0-9][A-Za-z0-9 _.-]{0,95}"
_SEGMENT_RE = re.compile(rf"^{SEGMENT}$")
IF_EXISTS = ("new version", "overwrite", "error")


def lora_output_path(loras_dir: str | Path, filename: str, if_exists: str = "new version") -> Path:
    """``<loras_dir>/<filename>.safetensors``, refusing names that could leave ``loras_dir``.

    ``filename`` may name a subfolder (``papa/cats``); ``.safetensors`` is added if missing.
    ``if_exists``: ``new version`` picks ``<name>_2``, ``_3``... (LoraLoader caches files by name, so
    a new name is what makes a re-export visible), ``overwrite``, or ``error``.
    """
    if if_exists not in IF_EXISTS:
        raise PapaError(f"if_exists must be one of {', '.join(IF_EXISTS)}")
    if not isinstance(filename, str) or not filename.strip():
        raise PapaError("filename is empty: type a name such as 'my_style' (saved as models/loras/my_style.safetensors)")
    name = filename.strip().replace("\\", "/")
    if name.endswith(".safetensors"):
        name = name[: -len(".safetensors")]
    parts = name.split("/")
    bad = [p for p in parts if not _SEGMENT_RE.match(p) or p in (".", "..") or p.endswith(".")]
    if bad or name.startswith("/"):
        raise PapaError(f"filename {filename!r} is not allowed: use letters, digits, spaces, '_', '-' and '.', "
                        "optionally with '/' subfolders, and nothing that leaves the loras folder ('..', '/' at the "
                        "start, drive letters)")
    root = Path(loras_dir).resolve()
    path = (root / Path(*parts)).with_name(parts[-1] + ".safetensors")
    if root not in path.resolve().parents:
        raise PapaError(f"filename {filename!r} would leave the loras folder")
    if path.exists():
        if if_exists == "error":
            raise PapaError(f"{path.name} already exists in {path.parent}; choose another filename or set if_exists "
                            "to 'new version' or 'overwrite'")
        if if_exists == "new version":
            n = 2
            while path.with_name(f"{parts[-1]}_{n}.safetensors").exists():
                n += 1
            path = path.with_name(f"{parts[-1]}_{n}.safetensors")
    return path


def export_session(sess: Session, loras_dir: str | Path, filename: str, if_exists: str = "new version",
                   dtype: str = "fp32") -> tuple[Path, dict]:
    """Write ``sess``'s LoRA to ``<loras_dir>/<filename>.safetensors`` (kohya format, the session's base
    model and training counts as metadata), atomically. Returns (the path written, the summary)."""
    if dtype not in ("fp32", "fp16"):
        raise PapaError(f"dtype must be fp32 or fp16, got {dtype!r}")
    path = lora_output_path(loras_dir, filename, if_exists)
    path.parent.mkdir(parents=True, exist_ok=True)
    name_map = sess.meta.get("ldm_names") if sess.meta.get("kohya_naming") == "ldm" else None
    summary = summarize(sess)
    export_lora(path, sess.lora_state, sess.lora_config, name_map=(name_map.__getitem__ if name_map else None),
                base_model=sess.meta.get("base_model"), prediction=sess.meta.get("prediction"),
                dtype=torch.float16 if dtype == "fp16" else torch.float32,
                papa_metadata={"session": sess.name, "rounds": summary["labelled_rounds"],
                               "likes": summary["likes"], "dislikes": summary["dislikes"],
                               "updates": summary["updates"], "session_version": sess.version})
    return path, summary
