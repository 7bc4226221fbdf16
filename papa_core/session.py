"""Sessions: the LoRA, the optimizer state and every round of feedback, persisted crash-safely.

On disk a session is one folder::

    <root>/<name>/session.json                 the commit point (versioned JSON, written last)
    <root>/<name>/index-v<N>.json              the same index, written just before it (for ``recover``)
    <root>/<name>/lora-v<N>.safetensors        current LoRA (LoraState)
    <root>/<name>/initial-v<N>.safetensors     the LoRA at creation (for reset)
    <root>/<name>/optimizer-v<N>.safetensors   Adam moments (+ param groups in the metadata)
    <root>/<name>/round-<i>-v<N>.safetensors   a round's clean latents, conditioning, and the
                                               LoRA/optimizer state before the update that used it

Every tensor file is written atomically under a new name, then session.json (naming each file
and its sha256) is replaced atomically, then unreferenced files are removed. A crash at any
point leaves a session.json whose files all exist and match their hashes: the session resumes
at its last complete change. Files that fail their hash are reported, never silently read. The
folder is the session's identity (a copied folder is its own session), every file an index names
must be a regular file inside it, and a folder whose index is lost is reported and recoverable,
never re-created over (``session_index``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

import torch

from .errors import (FeedbackError, NonFiniteError, PapaError, SessionBusy, SessionCorrupt, SessionMismatch,
                     SessionNotFound, StorageError)
from .feedback import check_feedback
from .fsio import UnsafeFile, atomic_save_safetensors, atomic_write_json, is_temp_file, read_regular_file, sha256_bytes
from .lora import LoraConfig, LoraState, clone_state
from .session_index import (FIX, FORMAT, FORMAT_VERSION, INDEX_COPY_RE, INDEX_FILE, MAX_BLOB_BYTES, index_copy_name,
                            read_index)

log = logging.getLogger("papa")
SESSION_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}"
_NAME_RE = re.compile(rf"^{SESSION_NAME_PATTERN}$")
ACTIONS = ("undo", "reset", "recover", "discard")  # what a person can do to a stored session (SessionStore.apply_action)
SESSION_NAME_RULE = "1-64 letters, digits, '_' or '-', starting with a letter or digit"
DEFAULT_MAX_UNDO = 20


def validate_session_name(name: Any) -> str:
    """Session names are also folder names: letters, digits, '_' and '-', 1–64 characters."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise PapaError(f"invalid session name {name!r}: use {SESSION_NAME_RULE} (it becomes a folder name)")
    return name


@dataclass
class Round:
    """One generated batch and what the person said about it.

    Attributes:
        index: 0-based round number within the session.
        x0: float32 [B, C, H, W] clean samples (latents) as the sampler produced them.
        cond: conditioning tensors, each batched [B, ...].
        seeds: one seed per image (regenerates it).
        feedback: B values in [-1, 1] once recorded (None while pending).
        meta: free-form settings (prompt text, sampler, steps, ...), JSON-serialisable.
        update: stats of the update that trained on this round (None if not yet used).
        lora_before / optimizer_before: state just before that update (for exact undo; dropped
            for rounds older than the session's undo depth).
    """

    index: int
    x0: torch.Tensor
    cond: dict[str, torch.Tensor]
    seeds: list[int]
    feedback: Optional[list[float]] = None
    meta: dict = field(default_factory=dict)
    update: Optional[dict] = None
    lora_before: Optional[LoraState] = None
    optimizer_before: Optional[dict[str, torch.Tensor]] = None

    @property
    def batch_size(self) -> int:
        return int(self.x0.shape[0])

    @property
    def batch_id(self) -> str:
        """Identity of the images shown: a content hash of the latents and seeds (16 hex digits).

        An answer names it, so it can only ever be recorded for the very batch the person saw.
        """
        h = hashlib.sha256(self.x0.detach().cpu().float().contiguous().numpy().tobytes())
        h.update(json.dumps(self.seeds).encode())
        return h.hexdigest()[:16]

    def feedback_tensor(self) -> torch.Tensor:
        if self.feedback is None:
            raise FeedbackError(f"round {self.index} has no feedback yet")
        return torch.tensor(self.feedback, dtype=torch.float32)


@dataclass
class Session:
    """A named personalisation run. Mutate it through its methods, then ``SessionStore.save``."""

    name: str
    base_fingerprint: str
    lora_config: LoraConfig
    lora_state: LoraState
    initial_lora: LoraState
    optimizer_state: Optional[dict[str, torch.Tensor]] = None
    rounds: list[Round] = field(default_factory=list)
    version: int = 0
    meta: dict = field(default_factory=dict)
    max_undo: int = DEFAULT_MAX_UNDO
    _dirty: set = field(default_factory=lambda: {"lora", "initial", "optimizer"}, repr=False)
    _files: dict = field(default_factory=dict, repr=False)  # blob -> {file, sha256} as last saved

    # --- checks ---
    def check_compatible(self, base_fingerprint: str, lora_config: LoraConfig) -> None:
        problems = []
        if base_fingerprint != self.base_fingerprint:
            problems.append(f"base model fingerprint {base_fingerprint} vs the session's {self.base_fingerprint} "
                            f"({self.meta.get('base_model', 'unknown model')})")
        problems += self.lora_config.describe_difference(lora_config)
        if problems:
            raise SessionMismatch(
                f"session {self.name!r} was made for another setup: " + "; ".join(problems)
                + ". Load the same checkpoint and LoRA settings, or start a new session name."
            )

    # --- rounds and feedback ---
    @property
    def pending_round(self) -> Optional[Round]:
        """The newest round if it still waits for feedback."""
        if self.rounds and self.rounds[-1].feedback is None:
            return self.rounds[-1]
        return None

    def add_round(self, x0: torch.Tensor, cond: Mapping[str, torch.Tensor], seeds: list[int],
                  meta: Optional[dict] = None) -> Round:
        """Record a freshly generated batch as the pending round (replacing an unanswered one)."""
        if x0.ndim != 4:
            raise PapaError(f"x0 must be [B, C, H, W], got shape {tuple(x0.shape)}")
        if not torch.isfinite(x0).all():
            raise NonFiniteError("the generated latents contain NaN or inf; they were not recorded. Check the model "
                                 "and sampler settings, then generate again")
        if len(seeds) != x0.shape[0]:
            raise PapaError(f"{len(seeds)} seeds for {x0.shape[0]} images")
        for k, v in cond.items():
            if v.shape[0] != x0.shape[0]:
                raise PapaError(f"conditioning {k!r} has batch {v.shape[0]}, the images have {x0.shape[0]}")
        if self.pending_round is not None:
            self.rounds.pop()
        r = Round(index=len(self.rounds), x0=x0.detach().to("cpu", torch.float32).clone(),
                  cond={k: v.detach().cpu().clone() for k, v in cond.items()}, seeds=[int(s) for s in seeds],
                  meta=dict(meta or {}))
        self.rounds.append(r)
        self._touch(f"round-{r.index}")
        return r

    def discard_pending(self) -> Round:
        """Drop the batch that waits for its answer (nothing is recorded); the next generate samples anew."""
        r = self.pending_round
        if r is None:
            raise FeedbackError(f"session {self.name!r} has no batch waiting for an answer")
        self.rounds.pop()
        self._dirty.discard(f"round-{r.index}")
        self.version += 1
        return r

    def record_feedback(self, feedback, round_index: Optional[int] = None) -> Round:
        """Attach feedback (B values in [-1, 1]) to the pending round (or to ``round_index``)."""
        if round_index is None:
            r = self.pending_round
            if r is None:
                raise FeedbackError(f"session {self.name!r} has no batch waiting for feedback: generate a batch first")
        else:
            if not 0 <= round_index < len(self.rounds):
                raise FeedbackError(f"session {self.name!r} has no round {round_index}")
            r = self.rounds[round_index]
            if r.update is not None:
                raise FeedbackError(f"round {round_index} was already trained on; undo that update first to change "
                                    "its feedback")
        r.feedback = check_feedback(list(feedback), r.batch_size)
        self._touch(f"round-{r.index}")
        return r

    def untrained_rounds(self) -> list[Round]:
        """Rounds with feedback that no update has used yet."""
        return [r for r in self.rounds if r.feedback is not None and r.update is None]

    def labelled_rounds(self) -> list[Round]:
        return [r for r in self.rounds if r.feedback is not None]

    @property
    def label_count(self) -> int:
        return sum(sum(1 for v in r.feedback if v != 0) for r in self.labelled_rounds())

    @property
    def update_count(self) -> int:
        return sum(1 for r in self.rounds if r.update is not None)

    # --- updates, undo, reset ---
    def apply_update(self, rounds: list[Round], lora_state: LoraState, optimizer_state: dict[str, torch.Tensor],
                     stats: dict) -> None:
        """Record a finished update: the pre-update state goes into the newest round (the undo point)."""
        target = rounds[-1]
        target.lora_before = clone_state(self.lora_state)
        target.optimizer_before = None if self.optimizer_state is None else clone_state(self.optimizer_state)
        for r in rounds:
            r.update = dict(stats, update_id=target.index, undo_point=(r is target))
            self._touch(f"round-{r.index}")
        self.lora_state = clone_state(lora_state)
        self.optimizer_state = clone_state(optimizer_state)
        self._touch("lora", "optimizer")
        self._trim_undo()

    def set_lora(self, state: LoraState) -> None:
        """Replace the LoRA (e.g. from ``lora_io.import_lora``); the optimizer restarts, rounds stay."""
        missing = sorted(set(self.lora_state) ^ set(state))
        if missing:
            raise SessionMismatch(f"the LoRA does not fit session {self.name!r}: keys differ (e.g. {missing[:2]})")
        for k, v in state.items():
            if tuple(v.shape) != tuple(self.lora_state[k].shape):
                raise SessionMismatch(f"LoRA tensor {k} has shape {tuple(v.shape)}, the session's is "
                                      f"{tuple(self.lora_state[k].shape)}: it was made with a different rank or base "
                                      "model; use a LoRA made for this session's model and settings")
            if not torch.isfinite(v).all():
                raise NonFiniteError(f"LoRA tensor {k} holds NaN or inf")
        self.lora_state = clone_state({k: v.float() for k, v in state.items()})
        self.optimizer_state = None
        self._touch("lora", "optimizer")

    def _trim_undo(self) -> None:
        points = [r for r in self.rounds if r.lora_before is not None]
        for r in points[: max(0, len(points) - self.max_undo)]:
            r.lora_before = None
            r.optimizer_before = None
            self._touch(f"round-{r.index}")

    def can_undo(self) -> bool:
        return any(r.update is not None and r.update.get("undo_point") and r.lora_before is not None
                   for r in self.rounds)

    def undo_last_update(self) -> int:
        """Restore the LoRA and optimizer exactly as before the last update; its rounds become untrained.

        Returns the number of rounds whose feedback is now untrained again.
        """
        points = [r for r in self.rounds if r.update is not None and r.update.get("undo_point")]
        if not points:
            raise PapaError(f"session {self.name!r} has no update to undo")
        last = points[-1]
        if last.lora_before is None:
            raise PapaError(f"the last update of {self.name!r} is older than the undo depth ({self.max_undo}); "
                            "it cannot be undone (reset the session instead)")
        update_id = last.update.get("update_id")
        affected = [r for r in self.rounds if r.update is not None and r.update.get("update_id") == update_id]
        self.lora_state = clone_state(last.lora_before)
        self.optimizer_state = None if last.optimizer_before is None else clone_state(last.optimizer_before)
        for r in affected:
            r.update = None
            self._touch(f"round-{r.index}")
        last.lora_before = None
        last.optimizer_before = None
        self._touch("lora", "optimizer")
        return len(affected)

    def reset(self) -> None:
        """Back to the initial LoRA; all rounds and feedback are discarded."""
        self.lora_state = clone_state(self.initial_lora)
        self.optimizer_state = None
        for r in self.rounds:
            self._dirty.discard(f"round-{r.index}")
        self.rounds = []
        self._touch("lora", "optimizer")

    def _touch(self, *blobs: str) -> None:
        self._dirty.update(blobs)
        self.version += 1


# ---------------------------------------------------------------------------------------------
# Persistence


def _flatten_optimizer(state: Optional[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {} if state is None else dict(state)


def optimizer_state_to_tensors(sd: dict) -> dict[str, torch.Tensor]:
    """torch optimizer state_dict → flat tensors; param_groups are kept as a JSON tensor of bytes."""
    out: dict[str, torch.Tensor] = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            out[f"state.{pid}.{k}"] = torch.as_tensor(v).detach().cpu().clone()
    groups = json.dumps(sd["param_groups"]).encode()
    out["param_groups_json"] = torch.frombuffer(bytearray(groups), dtype=torch.uint8).clone()
    return out


def optimizer_state_from_tensors(flat: Mapping[str, torch.Tensor]) -> dict:
    state: dict[int, dict] = {}
    for key, v in flat.items():
        if key == "param_groups_json":
            continue
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = v.clone()
    groups = json.loads(bytes(flat["param_groups_json"].tolist()).decode())
    return {"state": state, "param_groups": groups}


class SessionStore:
    """Sessions by name, each persisted under ``root/<name>/`` on every ``save``. Thread-safe.

    A session's identity is its folder: the name inside its index is only a record. Each session
    has its own lock (``locked``), so work on one session (an update, a slow disk) never stalls
    another. Keeps loaded sessions in memory; ``get`` loads from disk after a restart. A folder
    with data but no readable index is never written over: ``get`` reports it, ``recover``
    rebuilds it from the newest complete version on disk.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self._sessions: dict[str, Session] = {}
        self._locks: dict[str, threading.RLock] = {}
        self._guard = threading.Lock()  # held only for dictionary look-ups, never across disk work

    # --- locking ---
    def _lock_for(self, name: str) -> threading.RLock:
        with self._guard:
            return self._locks.setdefault(name, threading.RLock())

    @contextmanager
    def locked(self, name: str, timeout: Optional[float] = None) -> Iterator[None]:
        """Hold session ``name`` (around a read-modify-save); raise SessionBusy after ``timeout`` s."""
        lock = self._lock_for(validate_session_name(name))
        if not lock.acquire(timeout=-1 if timeout is None else timeout):
            raise SessionBusy(f"session {name!r} is busy (an update or a save is running); try again when it is done")
        try:
            yield
        finally:
            lock.release()

    # --- lookup ---
    def folder(self, name: str) -> Path:
        return self.root / validate_session_name(name)

    def exists(self, name: str) -> bool:
        """True when the session is loaded, or its folder holds any session data (even a damaged index)."""
        return name in self._sessions or _has_data(self.folder(name))

    def names(self) -> list[str]:
        on_disk = {p.parent.name for p in self.root.glob(f"*/{INDEX_FILE}")} if self.root.exists() else set()
        return sorted(on_disk | set(self._sessions))

    def get(self, name: str, timeout: Optional[float] = None) -> Session:
        with self.locked(name, timeout):
            s = self._sessions.get(name)
            if s is None:
                s = self._sessions[name] = self._load(name)
            return s

    def create(self, name: str, base_fingerprint: str, lora_config: LoraConfig, initial_lora: LoraState,
               meta: Optional[dict] = None) -> Session:
        with self.locked(name):
            if self.exists(name):
                raise PapaError(f"session {name!r} already exists; open it, or choose another name")
            s = Session(name=name, base_fingerprint=base_fingerprint, lora_config=lora_config,
                        lora_state=clone_state(initial_lora), initial_lora=clone_state(initial_lora),
                        meta=dict(meta or {}, created=time.strftime("%Y-%m-%dT%H:%M:%S")))
            self.save(s)
            self._sessions[name] = s
            return s

    def open_or_create(self, name: str, base_fingerprint: str, lora_config: LoraConfig, initial_lora: LoraState,
                       meta: Optional[dict] = None) -> Session:
        with self.locked(name):
            if self.exists(name):
                s = self.get(name)
                s.check_compatible(base_fingerprint, lora_config)
                return s
            return self.create(name, base_fingerprint, lora_config, initial_lora, meta)

    def forget(self, name: str) -> None:
        """Drop the in-memory copy (the next ``get`` re-reads the disk)."""
        with self._guard:
            self._sessions.pop(name, None)

    # --- the person's changes (every host: ComfyUI's routes and nodes, the webui panel) ---
    def record_answer(self, name: str, values: list[float], round_index: Optional[int] = None,
                      batch: Optional[str] = None, timeout: Optional[float] = None) -> Session:
        """Record ``values`` as the feedback of session ``name``'s pending round and save it; returns the
        session once the answer is on disk.

        ``round_index`` / ``batch`` (``Round.batch_id`` of the images shown), when the caller knows them,
        must name the pending round's very images. Raises FeedbackError when there is no such pending
        round (answered already, replaced, never generated), SessionBusy after ``timeout`` s of waiting.
        """
        with self.locked(name, timeout):
            sess = self.get(name)
            pending = sess.pending_round
            if pending is None or (round_index is not None and pending.index != round_index):
                which = "" if round_index is None else f" {round_index}"
                raise FeedbackError(f"session {name!r} has no pending round{which} (it was answered already, or no "
                                    "such batch was generated); generate a batch first")
            if batch is not None and batch != pending.batch_id:
                raise FeedbackError(f"this answer is about other images than round {pending.index} of session "
                                    f"{name!r} holds (the batch was replaced); reload and rate the batch shown")
            sess.record_feedback(values, round_index=pending.index)
            self.save(sess)
            return sess

    def apply_action(self, name: str, action: str, timeout: Optional[float] = None) -> Session:
        """``undo`` the last update, ``reset`` to the initial LoRA, ``discard`` the pending batch, or
        ``recover`` (see ``recover``) session ``name``, saved; SessionBusy after ``timeout`` s."""
        if action not in ACTIONS:
            raise PapaError(f"unknown action {action!r}: use one of {', '.join(ACTIONS)}")
        with self.locked(name, timeout):
            if action == "recover":
                return self.recover(name)
            sess = self.get(name)
            {"undo": sess.undo_last_update, "reset": sess.reset, "discard": sess.discard_pending}[action]()
            self.save(sess)
            return sess

    # --- writing ---
    def save(self, s: Session) -> None:
        """Persist ``s``; on failure (StorageError) the disk keeps the previous state and the in-memory
        copy is dropped, so the next ``get`` returns exactly what is stored."""
        with self.locked(s.name):
            try:
                self._save(s)
            except (OSError, ValueError) as e:
                self.forget(s.name)
                why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
                raise StorageError(
                    f"cannot save session {s.name!r} in {self.folder(s.name)} ({why}): make the folder "
                    "writable and free some disk space (or set PAPA_SESSION_DIR to another folder); the session on "
                    "disk is unchanged at its last saved state") from e

    def _save(self, s: Session) -> None:
        folder = self.folder(s.name)
        folder.mkdir(parents=True, exist_ok=True)
        files: dict[str, dict] = {}
        blobs = {"lora": lambda: s.lora_state, "initial": lambda: s.initial_lora,
                 "optimizer": lambda: _flatten_optimizer(s.optimizer_state)}
        for r in s.rounds:
            blobs[f"round-{r.index}"] = (lambda r=r: _round_tensors(r))
        for blob, tensors in blobs.items():
            prev = s._files.get(blob)
            if blob not in s._dirty and prev is not None and (folder / prev["file"]).is_file():
                files[blob] = prev
                continue
            fname = f"{blob}-v{s.version}.safetensors"
            sha = atomic_save_safetensors(folder / fname, tensors())
            files[blob] = {"file": fname, "sha256": sha}
        index = _index_of(s, files)
        copy = index_copy_name(s.version)
        atomic_write_json(folder / copy, index)        # what ``recover`` reads if session.json is lost
        atomic_write_json(folder / INDEX_FILE, index)  # the commit point
        s._dirty.clear()
        s._files = files
        keep = {f["file"] for f in files.values()} | {INDEX_FILE, copy}
        for p in folder.iterdir():
            stale = p.suffix == ".safetensors" or INDEX_COPY_RE.match(p.name) or is_temp_file(p.name)
            if p.name not in keep and stale:
                try:
                    p.unlink()
                except OSError:
                    pass

    # --- reading ---
    def _load(self, name: str) -> Session:
        folder = self.folder(name)
        index = folder / INDEX_FILE
        if not index.exists() and not index.is_symlink():
            if _has_data(folder):
                raise SessionCorrupt(f"session {name!r} in {folder} has lost its index ({INDEX_FILE} is missing); "
                                     f"{_describe_newest(folder)}. Nothing was changed or deleted.")
            known = self.names()
            raise SessionNotFound(f"no session named {name!r}" + (f" (known sessions: {', '.join(known)})" if known else "")
                                  + "; check the name, or create it first (PAPA Generate Batch creates it)")
        return _session_from_index(folder, name, read_index(index))

    def recover(self, name: str) -> Session:
        """Rebuild ``session.json`` from the newest complete version on disk (an ``index-v<N>.json``
        whose files all exist and match their hashes). Deletes nothing; refuses a session that loads."""
        with self.locked(name):
            folder = self.folder(name)
            try:
                self.forget(name)
                s = self._load(name)
            except SessionCorrupt:
                pass
            else:
                self._sessions[name] = s
                raise PapaError(f"session {name!r} loads without error; there is nothing to recover")
            m, s = _newest_complete(folder)
            if s is None:
                raise SessionCorrupt(f"session {name!r} in {folder}: {m}. Restore the folder from a backup, or move it "
                                     "away to start over")
            atomic_write_json(folder / INDEX_FILE, m)
            log.warning("PAPA: session %r recovered from %s (version %d, %d rounds)", name,
                        index_copy_name(m["version"]), s.version, len(s.rounds))
            self._sessions[name] = s
            return s


def _has_data(folder: Path) -> bool:
    """Any sign of a session: its index, an index copy, or a tensor file."""
    try:
        return any(e.name == INDEX_FILE or INDEX_COPY_RE.match(e.name) or e.name.endswith(".safetensors")
                   for e in os.scandir(folder))
    except OSError:
        return False


def _index_copies(folder: Path) -> list[Path]:
    """``index-v<N>.json`` files, newest version first."""
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := INDEX_COPY_RE.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def _newest_complete(folder: Path) -> tuple[Any, Optional[Session]]:
    """(index, session) of the newest index copy that loads completely, or (why none does, None)."""
    problems = []
    for path in _index_copies(folder):
        try:
            m = read_index(path)
            return m, _session_from_index(folder, folder.name, m)
        except SessionCorrupt as e:
            problems.append(f"{path.name}: {e}")
    if not problems:
        return "no complete version is on disk (no index-v<N>.json copy: the folder predates them or was emptied)", None
    return "no complete version is on disk (" + "; ".join(problems)[:2000] + ")", None


def _describe_newest(folder: Path) -> str:
    m, s = _newest_complete(folder)
    if s is None:
        return f"{m}; restore the folder from a backup, or move it away to start over"
    return (f"the newest complete version on disk is {index_copy_name(s.version)} ({len(s.rounds)} rounds, "
            f"{s.update_count} updates): run PAPA Undo / Reset with 'recover' (or POST /papa/v1/action "
            "{\"action\": \"recover\"}) to resume from it, or move the folder away to start over")


def _index_of(s: Session, files: dict[str, dict]) -> dict:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": s.name,
        "version": s.version,
        "base_fingerprint": s.base_fingerprint,
        "lora_config": s.lora_config.to_dict(),
        "max_undo": s.max_undo,
        "meta": s.meta,
        "rounds": [
            {"index": r.index, "seeds": r.seeds, "feedback": r.feedback, "meta": r.meta, "update": r.update,
             "has_undo": r.lora_before is not None, "has_optimizer_before": r.optimizer_before is not None,
             "cond_keys": sorted(r.cond)}
            for r in s.rounds
        ],
        "files": files,
        "saved": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _session_from_index(folder: Path, name: str, m: dict) -> Session:
    """Build the session an index (already schema-checked) describes, reading and checking each file."""
    tensors = {blob: _read_blob(folder, info) for blob, info in m["files"].items()}
    try:
        lora_config = LoraConfig.from_dict(m["lora_config"])
    except (KeyError, TypeError, ValueError) as e:
        raise SessionCorrupt(f"{folder / INDEX_FILE}: field 'lora_config' is damaged ({e}); {FIX}") from None
    rounds = [_round_from_index(rm, tensors[f"round-{rm['index']}"], folder) for rm in m["rounds"]]
    meta = dict(m.get("meta") or {})
    if m["name"] != name:  # a copied folder: it is its own session from now on, named after its folder
        log.warning("PAPA: session folder %s holds a copy of session %r; it is resumed as %r", folder, m["name"], name)
        meta.setdefault("copied_from", m["name"])
    s = Session(name=name, base_fingerprint=m["base_fingerprint"], lora_config=lora_config,
                lora_state=tensors["lora"], initial_lora=tensors["initial"],
                optimizer_state=tensors["optimizer"] or None, rounds=rounds, version=m["version"],
                meta=meta, max_undo=m.get("max_undo", DEFAULT_MAX_UNDO))
    s._dirty.clear()
    s._files = {blob: dict(info) for blob, info in m["files"].items()}
    return s


def _round_from_index(rm: dict, t: dict[str, torch.Tensor], folder: Path) -> Round:
    x0 = t.get("x0")
    if x0 is None or x0.ndim != 4 or x0.shape[0] != len(rm["seeds"]):
        raise SessionCorrupt(f"{folder}: round {rm['index']}'s latents do not match its {len(rm['seeds'])} seeds; {FIX}")

    def part(prefix: str, present: bool) -> Optional[dict[str, torch.Tensor]]:
        return {k[len(prefix):]: v for k, v in t.items() if k.startswith(prefix)} if present else None

    return Round(index=rm["index"], x0=x0, cond=part("cond.", True), seeds=list(rm["seeds"]),
                 feedback=rm["feedback"], meta=rm.get("meta") or {}, update=rm.get("update"),
                 lora_before=part("lora_before.", bool(rm.get("has_undo"))),
                 optimizer_before=part("opt_before.", bool(rm.get("has_optimizer_before"))))


def _read_blob(folder: Path, info: dict) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = folder / info["file"]  # a plain name (check_index), so inside the folder
    try:
        data = read_regular_file(path, MAX_BLOB_BYTES)
    except FileNotFoundError:
        raise SessionCorrupt(f"{path} is missing; the session folder was damaged: {FIX}") from None
    except UnsafeFile as e:
        raise SessionCorrupt(f"{e}; a session's files must be regular files inside its folder: {FIX}") from None
    if sha256_bytes(data) != info["sha256"]:
        raise SessionCorrupt(f"{path} does not match its recorded checksum (partial or edited file); restore "
                             "the folder from a backup or delete it to start over")
    try:
        return load(data)
    except (SafetensorError, ValueError) as e:
        raise SessionCorrupt(f"{path} is not a readable tensor file ({e}); {FIX}") from None


def _round_tensors(r: Round) -> dict[str, torch.Tensor]:
    out = {"x0": r.x0}
    out.update({f"cond.{k}": v for k, v in r.cond.items()})
    if r.lora_before is not None:
        out.update({f"lora_before.{k}": v for k, v in r.lora_before.items()})
    if r.optimizer_before is not None:
        out.update({f"opt_before.{k}": v for k, v in r.optimizer_before.items()})
    return out
