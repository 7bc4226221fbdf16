"""The one message format between the browser and the pack (routes and websocket events).

Every constant the JavaScript needs is served from ``GET /papa/v1/protocol`` (``describe()``), so
this file is their single source of truth. Every message carries ``protocol`` (this version), the
``session`` and the ``prompt_id`` / ``node_id`` it answers, so two tabs or two Record nodes never
cross. Pure Python: no ComfyUI import, unit-tested on its own.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from ..papa_core.errors import FeedbackError
from ..papa_core.feedback import SYMBOLS, check_feedback
from ..papa_core.session import ACTIONS, SESSION_NAME_PATTERN, SESSION_NAME_RULE

PROTOCOL_VERSION = 1
ROUTE_PREFIX = "/papa/v1"
ROUTES = {
    "protocol": ROUTE_PREFIX + "/protocol",      # GET: this description
    "sessions": ROUTE_PREFIX + "/sessions",      # GET: names and summaries
    "session": ROUTE_PREFIX + "/session",        # GET ?name=: one summary
    "waiting": ROUTE_PREFIX + "/waiting",        # GET: every batch a Record node asks about (to restore a page)
    "feedback": ROUTE_PREFIX + "/feedback",      # POST: an answer for a waiting (or timed-out) batch
    "cancel": ROUTE_PREFIX + "/cancel",          # POST: a waiting Record node gives up
    "action": ROUTE_PREFIX + "/action",          # POST: undo / reset / recover a session
}
EVENTS = {
    "request": "papa.request",  # a Record node waits: {session, prompt_id, node_id, round, batch, images, timeout_s}
    "done": "papa.done",        # that wait ended: {..., outcome: one of OUTCOMES}
    "status": "papa.status",    # a session changed: its summary
}
OUTCOMES = ("recorded", "cancelled", "timeout", "interrupted")  # how a wait ends; only "timeout" keeps it answerable
JSON_TYPE = "application/json"  # the only body type a state-changing POST accepts
READ_TIMEOUT_S = 10.0  # a route gives up on a session read (or a busy session) after this long
NODE_TYPES = {  # role -> the node's type name (its id in workflows): the registry and the JS read them here
    "session": "PAPA_Session", "generate": "PAPA_GenerateBatch", "record": "PAPA_RecordPreference",
    "update": "PAPA_Update", "export": "PAPA_ExportLoRA", "action": "PAPA_SessionAction"}
RECORD_NODE = NODE_TYPES["record"]  # the node type whose gallery the JS draws
MAX_BODY_BYTES = 64 * 1024
MAX_BATCH = 256
ID_PATTERN = r"[A-Za-z0-9:_.-]{1,128}"  # ComfyUI node ids ("12", "5:3") and prompt ids (uuids)
BATCH_ID_PATTERN = r"[0-9a-f]{16}"  # Round.batch_id: which images an answer is about

_SESSION_RE = re.compile(rf"^{SESSION_NAME_PATTERN}$")
_ID_RE = re.compile(rf"^{ID_PATTERN}$")
_BATCH_RE = re.compile(rf"^{BATCH_ID_PATTERN}$")


class ProtocolError(ValueError):
    """A malformed message; the text is safe to show to the sender (HTTP 400)."""


@dataclass(frozen=True)
class FeedbackPost:
    session: str
    prompt_id: Optional[str]
    node_id: Optional[str]
    round: int
    feedback: list[float]
    batch: Optional[str] = None


@dataclass(frozen=True)
class CancelPost:
    session: str
    prompt_id: Optional[str]
    node_id: Optional[str]


@dataclass(frozen=True)
class ActionPost:
    session: str
    action: str


def describe() -> dict:
    """Everything the front end needs, as JSON."""
    return {"protocol": PROTOCOL_VERSION, "routes": ROUTES, "events": EVENTS, "actions": list(ACTIONS),
            "outcomes": {o: o for o in OUTCOMES}, "node_types": NODE_TYPES,
            "session_pattern": SESSION_NAME_PATTERN, "max_body_bytes": MAX_BODY_BYTES, "max_batch": MAX_BATCH,
            "symbols": {"like": SYMBOLS["like"], "dislike": SYMBOLS["dislike"], "neutral": SYMBOLS["skip"]}}


def _common(body: Any) -> dict:
    if not isinstance(body, Mapping):
        raise ProtocolError("the body must be a JSON object")
    if body.get("protocol") != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol must be {PROTOCOL_VERSION} (got {body.get('protocol')!r}); reload the page "
                            "so the browser and the server run the same ComfyUI-PAPA version")
    return dict(body)


def check_session_name(name: Any) -> str:
    if not isinstance(name, str) or not _SESSION_RE.match(name):
        raise ProtocolError(f"session must be {SESSION_NAME_RULE}")
    return name


def _opt_id(body: Mapping, key: str) -> Optional[str]:
    v = body.get(key)
    if v is None:
        return None
    if not isinstance(v, str) or not _ID_RE.match(v):
        raise ProtocolError(f"{key} must be a short id string (letters, digits, ':', '_', '.', '-')")
    return v


def parse_feedback_post(body: Any) -> FeedbackPost:
    """Validate ``{"protocol", "session", "prompt_id", "node_id", "round", "feedback": [+1/-1/0 ...]}``."""
    b = _common(body)
    rnd = b.get("round")
    if isinstance(rnd, bool) or not isinstance(rnd, int) or rnd < 0:
        raise ProtocolError("round must be a non-negative integer (the round the images belong to)")
    fb = b.get("feedback")
    if not isinstance(fb, list) or not 1 <= len(fb) <= MAX_BATCH:
        raise ProtocolError(f"feedback must be a list of 1..{MAX_BATCH} numbers, one per image")
    try:
        values = check_feedback([SYMBOLS[v] if isinstance(v, str) and v in SYMBOLS else v for v in fb])
    except FeedbackError as e:
        raise ProtocolError(str(e)) from None
    batch = b.get("batch")
    if batch is not None and (not isinstance(batch, str) or not _BATCH_RE.match(batch)):
        raise ProtocolError("batch must be the 16-hex-digit id of the batch shown (from the request event)")
    return FeedbackPost(check_session_name(b.get("session")), _opt_id(b, "prompt_id"), _opt_id(b, "node_id"),
                        rnd, values, batch)


def parse_cancel_post(body: Any) -> CancelPost:
    b = _common(body)
    return CancelPost(check_session_name(b.get("session")), _opt_id(b, "prompt_id"), _opt_id(b, "node_id"))


def parse_action_post(body: Any) -> ActionPost:
    b = _common(body)
    action = b.get("action")
    if action not in ACTIONS:
        raise ProtocolError(f"action must be one of {', '.join(ACTIONS)}")
    return ActionPost(check_session_name(b.get("session")), action)
