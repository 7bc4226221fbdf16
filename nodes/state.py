"""The pack's only module-level state: one session store, one feedback broker, one feedback counter.

Node instances are dropped by ComfyUI (``/free``, cache eviction), so nothing lives on them. The
store persists every change to disk (``<ComfyUI user dir>/papa_sessions``, or ``$PAPA_SESSION_DIR``)
and survives restarts.
"""
from __future__ import annotations

import itertools
import os
import threading
from pathlib import Path
from typing import Optional

from ..papa_core.session import SessionStore
from .waiting import FeedbackBroker

_lock = threading.Lock()
_store: Optional[SessionStore] = None
broker = FeedbackBroker()
_counter = itertools.count(1)
_versions = {"feedback": 0, "lora": 0}


def session_root() -> Path:
    env = os.environ.get("PAPA_SESSION_DIR")
    if env:
        return Path(env)
    import folder_paths

    return Path(folder_paths.get_user_directory()) / "papa_sessions"


def store() -> SessionStore:
    """The one session store, at ``session_root()`` (it follows ``$PAPA_SESSION_DIR``)."""
    global _store
    root = session_root()
    with _lock:
        if _store is None or _store.root != root:
            _store = SessionStore(root)
        return _store


def reset_store() -> None:
    """Drop the in-memory store, as a ComfyUI restart does: the next ``store()`` knows only the disk."""
    global _store
    with _lock:
        _store = None


def bump(kind: str) -> int:
    """Note a change: ``feedback`` (recorded by a node or the route) or ``lora`` (update, undo, reset).

    ``IS_CHANGED`` of PAPA_Update returns the feedback version, that of PAPA_ExportLoRA the LoRA
    version, so they re-run exactly when something they depend on changed.
    """
    with _lock:
        _versions[kind] = next(_counter)
        return _versions[kind]


def version(kind: str) -> int:
    with _lock:
        return _versions[kind]
