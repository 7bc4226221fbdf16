"""The pack's HTTP routes under /papa/v1 (ComfyUI also serves them under /api/papa/v1).

Handlers validate everything (``protocol``), answer bad requests with 4xx and a message, never
raise into the server, and do disk work in a thread so the server keeps answering. Only POST
changes state; nothing here reads or writes outside the session folder.
"""
from __future__ import annotations

import asyncio
import json
import logging

from aiohttp import web

from ..papa_core.errors import FeedbackError, PapaError, SessionNotFound
from ..papa_core.summary import round_list, summarize
from . import state
from .protocol import (MAX_BODY_BYTES, PROTOCOL_VERSION, ROUTES, ProtocolError, check_session_name, describe,
                       parse_action_post, parse_cancel_post, parse_feedback_post)

log = logging.getLogger("papa")


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"ok": False, "protocol": PROTOCOL_VERSION, "error": message}, status=status)


async def _json_body(request: web.Request):
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise ProtocolError(f"body larger than {MAX_BODY_BYTES} bytes")
    raw = await request.content.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise ProtocolError(f"body larger than {MAX_BODY_BYTES} bytes")
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ProtocolError("the body must be UTF-8 JSON (and not nested absurdly deep)") from None


def _guard(handler):
    """Turn every failure into a 4xx/5xx JSON answer; nothing escapes into ComfyUI's server."""
    async def wrapped(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except ProtocolError as e:
            return _error(400, str(e))
        except SessionNotFound as e:
            return _error(404, str(e))
        except (FeedbackError, PapaError) as e:
            return _error(409, str(e))
        except Exception as e:  # noqa: BLE001 - the server must keep serving
            log.exception("PAPA route %s failed", request.path)
            return _error(500, f"internal error ({type(e).__name__}); see the ComfyUI log")
    return wrapped


@_guard
async def get_protocol(request: web.Request) -> web.Response:
    return web.json_response(describe())


@_guard
async def get_sessions(request: web.Request) -> web.Response:
    store = state.store()
    return web.json_response({"ok": True, "sessions": await asyncio.to_thread(store.names)})


@_guard
async def get_session(request: web.Request) -> web.Response:
    name = check_session_name(request.query.get("name"))
    store = state.store()
    def read():
        s = store.get(name)
        return summarize(s), round_list(s)

    summary, rounds = await asyncio.to_thread(read)
    waits = [{"node_id": w.node_id, "prompt_id": w.prompt_id, "round": w.round, "batch_size": w.batch_size}
             for w in state.broker.waiting(name)]
    return web.json_response({"ok": True, "summary": summary, "rounds": rounds, "waiting": waits})


@_guard
async def post_feedback(request: web.Request) -> web.Response:
    post = parse_feedback_post(await _json_body(request))
    result = state.broker.answer(post.session, post.node_id, post.prompt_id, post.round, post.feedback)
    if result == "delivered":
        return web.json_response({"ok": True, "delivered_to": "waiting node"})
    if result != "no_wait":
        return _error(409, {"wrong_round": "this answer is for another round than the node waits for; reload",
                            "wrong_count": "one feedback value per image is needed"}[result])
    # nobody waits: record on the session's pending round if it is the round the post names
    summary = await asyncio.to_thread(_record_offline, post.session, post.round, post.feedback)
    return web.json_response({"ok": True, "delivered_to": "session", "summary": summary})


def _record_offline(name: str, round_index: int, values: list[float]) -> dict:
    store = state.store()
    with store.lock:
        sess = store.get(name)
        pending = sess.pending_round
        if pending is None or pending.index != round_index:
            raise FeedbackError(f"session {name!r} has no pending round {round_index}; generate a batch first")
        sess.record_feedback(values, round_index=round_index)
        store.save(sess)
    state.bump("feedback")
    return summarize(sess)


@_guard
async def post_cancel(request: web.Request) -> web.Response:
    post = parse_cancel_post(await _json_body(request))
    found = state.broker.cancel(post.session, post.node_id, post.prompt_id)
    if not found:
        return _error(409, "no PAPA Record Preference node is waiting for this session")
    return web.json_response({"ok": True})


@_guard
async def post_action(request: web.Request) -> web.Response:
    from .papa_nodes import apply_session_action

    post = parse_action_post(await _json_body(request))
    summary = await asyncio.to_thread(apply_session_action, post.session, post.action)
    return web.json_response({"ok": True, "summary": summary})


def register(routes) -> None:
    """Add the handlers to ComfyUI's ``PromptServer.instance.routes`` (at import time)."""
    routes.get(ROUTES["protocol"])(get_protocol)
    routes.get(ROUTES["sessions"])(get_sessions)
    routes.get(ROUTES["session"])(get_session)
    routes.post(ROUTES["feedback"])(post_feedback)
    routes.post(ROUTES["cancel"])(post_cancel)
    routes.post(ROUTES["action"])(post_action)
