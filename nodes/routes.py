"""The pack's HTTP routes under /papa/v1 (ComfyUI also serves them under /api/papa/v1).

Handlers validate everything (``protocol``), answer bad requests with 4xx and a message, never
raise into the server, and do disk work in a thread with a time bound, so the server keeps
answering even when one session's folder is slow or damaged. Only POST changes state, and only
with a JSON body from the same origin (a page on another site cannot post a form here). Nothing
here reads or writes outside the session folder. An answer is acknowledged only once it is saved.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from urllib.parse import urlsplit

from aiohttp import web

from ..papa_core.errors import FeedbackError, PapaError, SessionBusy, SessionNotFound
from ..papa_core.summary import round_list, summarize
from . import service, state
from .protocol import (EVENTS, JSON_TYPE, MAX_BODY_BYTES, PROTOCOL_VERSION, READ_TIMEOUT_S, ROUTES, ProtocolError,
                       check_session_name, describe, parse_action_post, parse_cancel_post, parse_feedback_post)

log = logging.getLogger("papa")


class Refused(Exception):
    """A request refused before its body is read (HTTP status and message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"ok": False, "protocol": PROTOCOL_VERSION, "error": message}, status=status)


def _check_origin(request: web.Request) -> None:
    """A state-changing request must come from this server's own pages (or from no page at all)."""
    origin = request.headers.get("Origin")
    if origin is not None and urlsplit(origin).netloc.lower() != (request.host or "").lower():
        raise Refused(403, f"cross-origin request refused (Origin {origin[:100]!r} is not this server): use the "
                      "ComfyUI page served by this server, or a script that sends no Origin header")
    if request.content_type != JSON_TYPE:
        raise Refused(415, f"the body must be sent as Content-Type: {JSON_TYPE}")


async def _json_body(request: web.Request):
    _check_origin(request)
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise ProtocolError(f"body larger than {MAX_BODY_BYTES} bytes")
    raw = await request.content.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise ProtocolError(f"body larger than {MAX_BODY_BYTES} bytes")
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ProtocolError("the body must be UTF-8 JSON (and not nested absurdly deep)") from None


async def _in_thread(fn, *args):
    """Disk work off the event loop, given up (503) after READ_TIMEOUT_S; the thread finishes on its own."""
    try:
        return await asyncio.wait_for(asyncio.to_thread(fn, *args), READ_TIMEOUT_S)
    except asyncio.TimeoutError:
        raise SessionBusy(f"the session did not answer within {READ_TIMEOUT_S:g} s (busy with an update, or its "
                          "folder is on a slow or damaged disk); try again") from None


def _guard(handler):
    """Turn every failure into a 4xx/5xx JSON answer; nothing escapes into ComfyUI's server."""
    async def wrapped(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except Refused as e:
            return _error(e.status, str(e))
        except ProtocolError as e:
            return _error(400, str(e))
        except SessionNotFound as e:
            return _error(404, str(e))
        except SessionBusy as e:
            return _error(503, str(e))
        except (FeedbackError, PapaError) as e:
            return _error(409, str(e))
        except Exception as e:  # noqa: BLE001 - the server must keep serving
            log.exception("PAPA route %s failed", request.path)
            return _error(500, f"internal error ({type(e).__name__}); see the ComfyUI log")
    return wrapped


@_guard
async def get_protocol(request: web.Request) -> web.Response:
    from .loop import UPDATE_PRESET_NAMES, expert_values

    # what PAPA Update's advanced inputs hold for each preset: the JS shows them when a preset is picked
    presets = {name: expert_values(name) for name in UPDATE_PRESET_NAMES}
    return web.json_response(dict(describe(), update_presets=presets))


@_guard
async def get_sessions(request: web.Request) -> web.Response:
    return web.json_response({"ok": True, "sessions": await _in_thread(state.store().names)})


@_guard
async def get_session(request: web.Request) -> web.Response:
    name = check_session_name(request.query.get("name"))
    store = state.store()

    def read():
        with store.locked(name, READ_TIMEOUT_S):
            s = store.get(name)
            return summarize(s), round_list(s)

    summary, rounds = await _in_thread(read)
    waits = [{"node_id": w.node_id, "prompt_id": w.prompt_id, "round": w.round, "batch_size": w.batch_size}
             for w in state.broker.waiting(name)]
    return web.json_response({"ok": True, "summary": summary, "rounds": rounds, "waiting": waits})


@_guard
async def get_waiting(request: web.Request) -> web.Response:
    """Every batch a Record node asks about: live waits, and timed-out ones whose batch is still pending."""
    now = time.monotonic()
    live = [dict(w.request, state="waiting", seconds_left=max(0, round(w.deadline - now)))
            for w in state.broker.waiting()]
    stale = await _in_thread(_still_pending, state.broker.timed_out())
    return web.json_response({"ok": True, "waiting": live + [dict(w.request, state="timed_out", seconds_left=0)
                                                            for w in stale]})


def _still_pending(waits: list) -> list:
    """The timed-out waits whose batch is still the session's pending one; the rest are settled."""
    keep = []
    for w in waits:
        try:
            pending = state.store().get(w.session, READ_TIMEOUT_S).pending_round
        except PapaError:
            pending = None
        if pending is not None and pending.index == w.round and pending.batch_id == w.request.get("batch"):
            keep.append(w)
        else:
            state.broker.settle(w.session, w.round)
    return keep


@_guard
async def post_feedback(request: web.Request) -> web.Response:
    """Save the answer first, then wake the waiting node: a 200 means the click is on disk."""
    post = parse_feedback_post(await _json_body(request))
    w = state.broker.find(post.session, post.node_id, post.prompt_id)
    problem = w.mismatch(post.round, post.feedback) if w is not None else None
    if problem:
        return _error(409, {"wrong_round": "this answer is for another round than the node waits for; reload",
                            "wrong_count": "one feedback value per image is needed"}[problem])
    # not given up midway like a read: once the lock is had, the write finishes before the answer goes out
    summary = await asyncio.to_thread(service.record_answer, post.session, post.round, post.feedback, READ_TIMEOUT_S,
                                      post.batch)
    delivered = w is not None and state.broker.deliver(w, post.feedback)
    # every tab showing this batch closes it (the one that answered, and any other)
    service.send(EVENTS["done"], {"protocol": PROTOCOL_VERSION, "session": post.session, "round": post.round,
                                  "node_id": post.node_id, "outcome": "recorded"})
    return web.json_response({"ok": True, "saved": True, "delivered_to": "waiting node" if delivered else "session",
                              "summary": summary})


@_guard
async def post_cancel(request: web.Request) -> web.Response:
    post = parse_cancel_post(await _json_body(request))
    if state.broker.cancel(post.session, post.node_id, post.prompt_id):
        return web.json_response({"ok": True})  # the node drops the batch as its wait ends
    stale = [w for w in state.broker.timed_out() if w.matches(post.session, post.node_id, post.prompt_id)]
    if not stale:
        return _error(409, "no PAPA Record Preference node is waiting for this session")
    await asyncio.to_thread(service.discard_batch, post.session, stale[0].round)
    return web.json_response({"ok": True})


@_guard
async def post_action(request: web.Request) -> web.Response:
    post = parse_action_post(await _json_body(request))
    summary = await asyncio.to_thread(service.apply_session_action, post.session, post.action, READ_TIMEOUT_S)
    return web.json_response({"ok": True, "summary": summary})


def register(routes) -> None:
    """Add the handlers to ComfyUI's ``PromptServer.instance.routes`` (at import time)."""
    routes.get(ROUTES["protocol"])(get_protocol)
    routes.get(ROUTES["sessions"])(get_sessions)
    routes.get(ROUTES["session"])(get_session)
    routes.get(ROUTES["waiting"])(get_waiting)
    routes.post(ROUTES["feedback"])(post_feedback)
    routes.post(ROUTES["cancel"])(post_cancel)
    routes.post(ROUTES["action"])(post_action)
