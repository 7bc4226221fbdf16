"""Session work shared by the nodes and the routes: opening a session, recording an answer (typed, or
waited for from the browser), undo / reset / recover / discard, start-up clean-up, and telling the
browser. No ComfyUI import at module level.

An answer is acknowledged only after it is on disk: ``record_answer`` holds the session's own
lock, records the values on the pending round, saves, and only then returns, so a route that
answers 200 after it (and a node that goes on after it) can be killed at any moment without
losing the click.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import torch

from ..papa_core.errors import PapaError, SessionNotFound
from ..papa_core.fsio import remove_temp_files
from ..papa_core.lora import init_lora_state
from ..papa_core.session import Round, Session
from ..papa_core.summary import summarize
from . import state
from .common import SessionRef
from .protocol import EVENTS, PROTOCOL_VERSION
from .waiting import FeedbackCancelled, FeedbackTimeout

log = logging.getLogger("papa")


def send(event: str, data: dict, to_client: bool = False) -> None:
    """A websocket event: to every tab, or (``to_client``) only to the tab that queued the prompt."""
    try:
        from server import PromptServer
    except ImportError:
        return
    server = getattr(PromptServer, "instance", None)
    if server is not None:
        server.send_sync(event, data, getattr(server, "client_id", None) if to_client else None)


def send_status(summary: dict) -> None:
    send(EVENTS["status"], dict(summary, protocol=PROTOCOL_VERSION))


def open_session(ref: SessionRef, model, info) -> Session:
    """Open the session for this MODEL, creating it (and its zero LoRA) on first use."""
    from .comfy_model import base_fingerprint

    targets = info.lora_targets(ref.lora_config)
    with torch.inference_mode(False):
        return state.store().open_or_create(ref.name, base_fingerprint(model, info), ref.lora_config,
                                            init_lora_state(targets, ref.lora_config), info.session_meta(ref.lora_config))


def get_session(ref: SessionRef) -> Session:
    """The stored session a link names, with what to do when it does not exist yet."""
    try:
        return state.store().get(ref.name)
    except SessionNotFound as e:
        raise PapaError(f"{e}. Run PAPA Generate Batch with this session first") from None


def pending_round(ref: SessionRef, batch_size: int) -> Round:
    """The session's batch waiting for an answer, checked against the ``batch_size`` images that came in."""
    pending = get_session(ref).pending_round
    if pending is None:
        raise PapaError(f"session {ref.name!r} has no batch waiting for feedback: connect this node after PAPA "
                        "Generate Batch (which records the batch) and queue again")
    if batch_size != pending.batch_size:
        raise PapaError(f"{batch_size} images came in, but the pending round has {pending.batch_size}: connect "
                        "the images output of the PAPA Generate Batch that uses this session")
    return pending


def wait_for_answer(session_name: str, node_id: str, pending: Round, preview: list, timeout_s: int,
                    prompt_id: Optional[str], interrupted) -> list[float]:
    """Ask every open tab about ``pending`` and wait for the answer, which the route saves before it
    wakes this wait. Cancel drops the batch (then ``interrupted`` is raised: ComfyUI's interrupt);
    a timeout keeps it pending and answerable; ``interrupted()`` is polled while waiting."""
    msg = {"protocol": PROTOCOL_VERSION, "session": session_name, "prompt_id": prompt_id, "node_id": node_id,
           "round": pending.index, "batch": pending.batch_id, "batch_size": pending.batch_size, "images": preview,
           "timeout_s": timeout_s, "summary": summarize(state.store().get(session_name))}
    w = state.broker.open(session_name, node_id, prompt_id, pending.index, pending.batch_size, request=msg)
    send(EVENTS["request"], msg)  # every open tab shows it; an answer in one closes it in the others
    outcome = "interrupted"
    try:
        values = state.broker.wait(w, timeout_s, interrupted)
        outcome = "recorded"
        return values
    except FeedbackCancelled:
        outcome = "cancelled"
        discard_batch(session_name, pending.index)
        raise
    except FeedbackTimeout:
        outcome = "timeout"
        raise PapaError(f"no answer within {timeout_s} s. The batch is still pending and answerable: rate it in the "
                        "gallery (the images stay there), or type the answer into this node (e.g. '+ - 0 +') and "
                        "queue again — the same batch is shown again, no new one is sampled") from None
    finally:
        send(EVENTS["done"], dict(msg, images=None, summary=None, outcome=outcome))


def record_answer(name: str, round_index: int, values: list[float], timeout: Optional[float] = None,
                  batch: Optional[str] = None) -> dict:
    """Record ``values`` as the feedback of the session's pending round ``round_index`` and save it.

    ``batch`` (``Round.batch_id`` of the images shown, when the caller knows it) must name that
    round's very images. Returns the session's summary once the answer is on disk. Raises
    FeedbackError when that round is not the pending one (already answered, replaced, or never
    generated) or ``batch`` names other images, SessionBusy after ``timeout`` s of waiting.
    """
    summary = summarize(state.store().record_answer(name, values, round_index, batch, timeout))
    state.broker.settle(name, round_index)
    state.bump("feedback")
    return summary


def discard_batch(name: str, round_index: int) -> dict:
    """Drop round ``round_index`` if it is still the batch waiting for an answer (Cancel): nothing is
    recorded, and the next PAPA Generate Batch samples a new batch."""
    store = state.store()
    with store.locked(name):
        sess = store.get(name)
        pending = sess.pending_round
        if pending is not None and pending.index == round_index:
            sess.discard_pending()
            store.save(sess)
        summary = summarize(sess)
    state.broker.settle(name, round_index)
    return summary


def apply_session_action(name: str, action: str, timeout: Optional[float] = None) -> dict:
    """Undo the last update, reset, recover (``SessionStore.recover``) or discard the pending batch of
    a stored session and save it (shared by the node and the route); SessionBusy after ``timeout`` s
    of waiting for the session."""
    summary = summarize(state.store().apply_action(name, action, timeout))
    state.broker.settle(name)
    state.bump("lora")
    state.bump("feedback")  # undone feedback is untrained again: PAPA Update must run
    send_status(summary)
    return summary


def clean_leftovers(lora_folders: list[str]) -> list[Path]:
    """Remove the temporary files that killed writes left (session folders and LoRA folders): run at
    start-up, before anything of the pack writes. Returns what was removed."""
    removed = []
    root = state.session_root()
    if root.is_dir():
        for folder in root.iterdir():
            if folder.is_dir() and not folder.is_symlink():
                removed += remove_temp_files(folder)
    for folder in lora_folders:
        removed += remove_temp_files(folder, recursive=True)
    if removed:
        log.info("PAPA: removed %d temporary files left by interrupted writes", len(removed))
    return removed
