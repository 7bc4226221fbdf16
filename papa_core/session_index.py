"""A session folder's index: what ``session.json`` holds, the files it may name, and its schema check.

The index is the session's commit point. Each save writes it twice: as ``index-v<N>.json`` (kept
until the next save completes) and then, last, as ``session.json``. So a folder whose
``session.json`` was deleted or damaged still holds a complete, hash-checked description of its
newest version, from which ``SessionStore.recover`` rebuilds it.

Everything read from an index is checked before use (``check_index``): one clear error names the
field, and every file it names is a plain name inside the folder (``<blob>-v<N>.safetensors``).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .errors import FeedbackError, SessionCorrupt
from .feedback import check_feedback
from .fsio import UnsafeFile, read_regular_file

FORMAT = "papa-session"
FORMAT_VERSION = 1
INDEX_FILE = "session.json"
INDEX_COPY_RE = re.compile(r"^index-v(\d{1,12})\.json$")
BLOB_FILE_RE = re.compile(r"^(lora|initial|optimizer|round-\d{1,9})-v\d{1,12}\.safetensors$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
MAX_INDEX_BYTES = 64 << 20   # an index of 100 000 rounds is a few MB
MAX_BLOB_BYTES = 16 << 30    # a round of SDXL latents with a rank-256 LoRA snapshot stays far below
FIX = ("restore the folder from a backup, run PAPA Undo / Reset with 'recover' (the newest complete version on "
       "disk), or move the folder away to start over")


def index_copy_name(version: int) -> str:
    return f"index-v{version}.json"


def read_index(path: Path) -> dict:
    """Read and check one index file (``session.json`` or an ``index-v<N>.json``)."""
    try:
        raw = read_regular_file(path, MAX_INDEX_BYTES)
    except UnsafeFile as e:
        raise SessionCorrupt(f"{e}; a session's files must be regular files inside its folder: {FIX}") from None
    try:
        m = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, ValueError) as e:
        raise SessionCorrupt(f"{path} is not valid JSON ({e}); {FIX}") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise SessionCorrupt(f"{path} is not a PAPA session file")
    version = m.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise SessionCorrupt(f"{path} was written by a newer ComfyUI-PAPA (format {version}); update the pack")
    check_index(m, str(path))
    return m


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def _bad(where: str, field: str, problem: str) -> SessionCorrupt:
    return SessionCorrupt(f"{where}: field {field!r} {problem}; {FIX}")


def _need(m: dict, key: str, types: tuple, where: str, prefix: str = "", optional: bool = False) -> Any:
    field = prefix + key
    if key not in m:
        if optional:
            return None
        raise _bad(where, field, "is missing")
    v = m[key]
    if optional and v is None:
        return None
    if isinstance(v, bool) and bool not in types or not isinstance(v, types):
        names = " or ".join(t.__name__ for t in types)
        raise _bad(where, field, f"must be {names}, not {type(v).__name__}")
    return v


def check_index(m: dict, where: str) -> None:
    """Raise SessionCorrupt naming the first field that does not fit the schema."""
    for key in ("format_version", "version"):
        if _need(m, key, (int,), where) < 0:
            raise _bad(where, key, "must be ≥ 0")
    _need(m, "name", (str,), where)
    _need(m, "base_fingerprint", (str,), where)
    _need(m, "lora_config", (dict,), where)
    if (_need(m, "max_undo", (int,), where, optional=True) or 0) < 0:
        raise _bad(where, "max_undo", "must be ≥ 0")
    _need(m, "meta", (dict,), where, optional=True)
    rounds = _need(m, "rounds", (list,), where)
    files = _need(m, "files", (dict,), where)
    for i, r in enumerate(rounds):
        _check_round(r, i, where)
    needed = ["lora", "initial", "optimizer"] + [f"round-{i}" for i in range(len(rounds))]
    for blob in needed:
        info = _need(files, blob, (dict,), where, prefix="files.")
        name = _need(info, "file", (str,), where, prefix=f"files.{blob}.")
        if not BLOB_FILE_RE.match(name) or not name.startswith(blob + "-v"):
            raise _bad(where, f"files.{blob}.file", f"= {name[:80]!r} is not a file name of this session "
                       f"('{blob}-v<N>.safetensors' inside the folder)")
        if not SHA256_RE.match(_need(info, "sha256", (str,), where, prefix=f"files.{blob}.")):
            raise _bad(where, f"files.{blob}.sha256", "is not a sha256 hex digest")


def _check_round(r: Any, i: int, where: str) -> None:
    p = f"rounds[{i}]."
    if not isinstance(r, dict):
        raise _bad(where, f"rounds[{i}]", "must be an object")
    if _need(r, "index", (int,), where, p) != i:
        raise _bad(where, p + "index", f"must be {i} (rounds are stored in order)")
    seeds = _need(r, "seeds", (list,), where, p)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds):
        raise _bad(where, p + "seeds", "must be a non-empty list of integers, one per image")
    feedback = _need(r, "feedback", (list,), where, p, optional=True)
    if feedback is not None:
        try:
            check_feedback(feedback, len(seeds))
        except FeedbackError as e:
            raise _bad(where, p + "feedback", f"is damaged ({e})") from None
    _need(r, "meta", (dict,), where, p, optional=True)
    _need(r, "update", (dict,), where, p, optional=True)
    for flag in ("has_undo", "has_optimizer_before"):
        _need(r, flag, (bool,), where, p, optional=True)
    keys = _need(r, "cond_keys", (list,), where, p, optional=True) or []
    if any(not isinstance(k, str) for k in keys):
        raise _bad(where, p + "cond_keys", "must be a list of names")
