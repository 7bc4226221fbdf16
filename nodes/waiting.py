"""A Record node waiting for the browser's answer, without blocking the server.

The node runs on ComfyUI's prompt worker thread and waits on a ``threading.Event``; the route
handler (server event loop) delivers the answer. One ``FeedbackBroker`` holds every wait, keyed
by (session, node id); an answer must name the same session, node, prompt and round, so a stale
tab or a second Record node can never answer for another. A wait that timed out is kept (as
"timed out") until its batch is answered or replaced: the batch is still pending in the session,
and a page that loads later can still show it and answer it. Pure Python: no ComfyUI import.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional


class FeedbackCancelled(Exception):
    """The person pressed Cancel."""


class FeedbackTimeout(Exception):
    """No answer within the node's timeout."""


@dataclass
class Wait:
    session: str
    node_id: str
    prompt_id: Optional[str]
    round: int
    batch_size: int
    request: dict = field(default_factory=dict)  # what the browser was sent: restores a page that loads later
    timed_out: bool = False
    deadline: float = 0.0  # time.monotonic() at which the wait gives up
    _event: threading.Event = field(default_factory=threading.Event, repr=False)
    _answer: Optional[list[float]] = None
    _cancelled: bool = False

    def matches(self, session: str, node_id: Optional[str], prompt_id: Optional[str]) -> bool:
        return (session == self.session and (node_id is None or node_id == self.node_id)
                and (prompt_id is None or self.prompt_id is None or prompt_id == self.prompt_id))

    def mismatch(self, round_index: int, values: list[float]) -> Optional[str]:
        """Why an answer does not fit this wait ("wrong_round", "wrong_count"), or None."""
        if round_index != self.round:
            return "wrong_round"
        if len(values) != self.batch_size:
            return "wrong_count"
        return None


class FeedbackBroker:
    """Every open wait; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waits: dict[tuple[str, str], Wait] = {}
        self._timed_out: dict[tuple[str, str], Wait] = {}

    def open(self, session: str, node_id: str, prompt_id: Optional[str], round_index: int, batch_size: int,
             request: Optional[dict] = None) -> Wait:
        w = Wait(session, node_id, prompt_id, round_index, batch_size, dict(request or {}))
        with self._lock:
            old = self._waits.pop((session, node_id), None)
            self._timed_out.pop((session, node_id), None)
            self._waits[(session, node_id)] = w
        if old is not None:  # a leftover from an interrupted run: release it
            old._cancelled = True
            old._event.set()
        return w

    def close(self, w: Wait) -> None:
        with self._lock:
            if self._waits.get((w.session, w.node_id)) is w:
                del self._waits[(w.session, w.node_id)]

    def waiting(self, session: Optional[str] = None) -> list[Wait]:
        with self._lock:
            return [w for w in self._waits.values() if session is None or w.session == session]

    def timed_out(self) -> list[Wait]:
        """Waits that timed out while their batch is still unanswered (until ``settle`` drops them)."""
        with self._lock:
            return list(self._timed_out.values())

    def settle(self, session: str, round_index: Optional[int] = None) -> None:
        """Forget timed-out waits of ``session`` (of one round, or all): answered, discarded or replaced."""
        with self._lock:
            for key, w in list(self._timed_out.items()):
                if w.session == session and (round_index is None or w.round == round_index):
                    del self._timed_out[key]

    def find(self, session: str, node_id: Optional[str], prompt_id: Optional[str]) -> Optional[Wait]:
        """The one open wait these ids name (None when none or several do)."""
        with self._lock:
            found = [w for w in self._waits.values() if w.matches(session, node_id, prompt_id)]
        return found[0] if len(found) == 1 else None

    def deliver(self, w: Wait, values: list[float]) -> bool:
        """Wake the node of ``w`` with ``values``; False when that wait has ended meanwhile."""
        with self._lock:
            if self._waits.get((w.session, w.node_id)) is not w or w._event.is_set():
                return False
            w._answer = list(values)
            w._event.set()
            return True

    def answer(self, session: str, node_id: Optional[str], prompt_id: Optional[str], round_index: int,
               values: list[float]) -> str:
        """Deliver feedback. Returns "delivered", or why not: "no_wait", "wrong_round", "wrong_count"."""
        w = self.find(session, node_id, prompt_id)
        if w is None:
            return "no_wait"
        problem = w.mismatch(round_index, values)
        if problem:
            return problem
        return "delivered" if self.deliver(w, values) else "no_wait"

    def cancel(self, session: str, node_id: Optional[str], prompt_id: Optional[str]) -> bool:
        w = self.find(session, node_id, prompt_id)
        if w is None:
            return False
        w._cancelled = True
        w._event.set()
        return True

    def cancel_all(self) -> int:
        """Release every wait (ComfyUI's interrupt)."""
        with self._lock:
            waits = list(self._waits.values())
        for w in waits:
            w._cancelled = True
            w._event.set()
        return len(waits)

    def wait(self, w: Wait, timeout_s: float, check_interrupt: Callable[[], None] = lambda: None,
             tick: Optional[Callable[[float], None]] = None, poll_s: float = 0.25) -> list[float]:
        """Block until answered; raises FeedbackCancelled, FeedbackTimeout, or whatever
        ``check_interrupt`` raises (ComfyUI's InterruptProcessingException). Always closes the wait."""
        deadline = w.deadline = time.monotonic() + timeout_s
        try:
            while True:
                left = deadline - time.monotonic()
                if w._event.wait(min(poll_s, max(left, 0.0))):
                    if w._cancelled:
                        raise FeedbackCancelled()
                    assert w._answer is not None
                    return w._answer
                check_interrupt()
                if left <= 0:
                    w.timed_out = True
                    with self._lock:
                        self._timed_out[(w.session, w.node_id)] = w
                    raise FeedbackTimeout()
                if tick is not None:
                    tick(left)
        finally:
            self.close(w)
