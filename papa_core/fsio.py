"""Files on disk: atomic writes, bounded reads of regular files only, and leftover clean-up.

Write protocol: write a temporary file in the same folder, fsync it, rename it over the target
(atomic on POSIX and on Windows' os.replace), then fsync the folder so the rename itself survives
a power cut. The file gets the permissions an ordinary ``open(path, "w")`` would give (0666 less
the umask), not ``mkstemp``'s private 0600, so a LoRA in a shared models folder stays readable.

Read protocol: a file that a session or index *names* is opened without following symlinks, must
be a regular file (not a device, FIFO or folder) and no larger than a bound, so a damaged or
hostile folder can neither hang a reader (``/dev/zero``, a FIFO) nor point it outside its folder.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

TEMP_SUFFIX = ".tmp"
# ``mkstemp(prefix=".<target>.", suffix=".tmp")`` names: what a killed write leaves behind
_TEMP_RE = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def _current_umask() -> int:
    mask = os.umask(0)  # the only portable way to read it; restored at once (at import, single-threaded)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_current_umask()


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=1, sort_keys=True, allow_nan=False).encode("utf-8"))


def safetensors_bytes(tensors: Mapping[str, torch.Tensor], metadata: Optional[Mapping[str, str]] = None) -> bytes:
    from safetensors.torch import save

    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    return save(flat, metadata=dict(metadata) if metadata else None)


def atomic_save_safetensors(
    path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], metadata: Optional[Mapping[str, str]] = None
) -> str:
    """Write atomically; returns the sha256 of the bytes written (for integrity checks on load)."""
    data = safetensors_bytes(tensors, metadata)
    atomic_write_bytes(path, data)
    return sha256_bytes(data)


def sha256_bytes(data: bytes) -> str:
    """The hex digest a session index records for a file's bytes."""
    return hashlib.sha256(data).hexdigest()


class UnsafeFile(OSError):
    """A named file that is a symlink, not a regular file, or larger than its bound."""


def read_regular_file(path: str | os.PathLike, max_bytes: int) -> bytes:
    """The bytes of ``path``, which must be a regular file (no symlink) of at most ``max_bytes``.

    Raises FileNotFoundError, or UnsafeFile naming what it is instead. Never blocks on a FIFO or
    device: the open is non-blocking and the type is checked on the opened descriptor.
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    if os.path.islink(path):  # O_NOFOLLOW is missing on Windows
        raise UnsafeFile(f"{path} is a symbolic link")
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UnsafeFile(f"{path} is a symbolic link") from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise UnsafeFile(f"{path} is not a regular file")
    if st.st_size > max_bytes:
        os.close(fd)
        raise UnsafeFile(f"{path} has {st.st_size} bytes, more than the {max_bytes} a session file may have")
    with os.fdopen(fd, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise UnsafeFile(f"{path} grew past {max_bytes} bytes while being read")
    return data


def is_temp_file(name: str) -> bool:
    """Whether a file name is one of ``atomic_write_bytes``'s temporary names."""
    return bool(_TEMP_RE.match(name))


def remove_temp_files(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Delete what killed writes left in ``folder`` (only this module's temporary names, only regular
    files, never following links). Returns the paths removed; unreadable folders are skipped."""
    folder = Path(folder)
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for e in entries:
        try:
            if e.is_dir(follow_symlinks=False):
                if recursive:
                    removed += remove_temp_files(e.path, recursive=True)
            elif e.is_file(follow_symlinks=False) and is_temp_file(e.name):
                os.unlink(e.path)
                removed.append(Path(e.path))
        except OSError:
            continue
    return removed
