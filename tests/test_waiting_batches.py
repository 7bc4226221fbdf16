"""An answer belongs to the images shown (issue 19), without ComfyUI: batch ids, timed-out waits that stay
answerable, the page-restore route, Cancel dropping the batch, and the real Record node's text path."""
from __future__ import annotations

import json
import sys
import threading
import time
import types

import pytest
import torch

from papa_testkit.pack import load_pack

pack = load_pack()
from comfyui_papa.nodes import papa_nodes, protocol, routes, service  # noqa: E402
from comfyui_papa.nodes.common import SessionRef  # noqa: E402
from comfyui_papa.nodes.waiting import FeedbackBroker, FeedbackTimeout  # noqa: E402
from comfyui_papa.papa_core.errors import FeedbackError  # noqa: E402
from comfyui_papa.papa_core.lora import LoraConfig, init_lora_state  # noqa: E402
from comfyui_papa.papa_core.session import SessionStore  # noqa: E402

from papa_testkit.pack import call_routes  # noqa: E402

CFG = LoraConfig(rank=2, alpha=2.0)


@pytest.fixture
def pending(isolated_store, monkeypatch):
    """Session 'w' with round 0 (3 images, seed 5) waiting for its answer; returns the pack's state."""
    state = isolated_store
    monkeypatch.setattr(state, "broker", FeedbackBroker())
    s = state.store().create("w", "fp", CFG, init_lora_state({"a.to_q": (8, 8)}, CFG))
    s.add_round(torch.randn(3, 4, 8, 8), {"c_crossattn": torch.randn(3, 77, 8)}, seeds=[5] * 3)
    state.store().save(s)
    return state


def test_a_batch_id_names_exactly_the_images_and_survives_a_restart(pending, tmp_path):
    r = pending.store().get("w").rounds[0]
    assert len(r.batch_id) == 16 and r.batch_id == SessionStore(tmp_path / "sessions").get("w").rounds[0].batch_id
    other = r.x0.clone()
    other[0, 0, 0, 0] += 1e-3
    assert type(r)(0, other, {}, r.seeds).batch_id != r.batch_id
    assert type(r)(0, r.x0, {}, [6] * 3).batch_id != r.batch_id  # same latents, other seeds


def test_an_answer_for_other_images_is_refused(pending):
    with pytest.raises(FeedbackError, match="other images"):
        service.record_answer("w", 0, [1, 1, -1], batch="0" * 16)
    assert pending.store().get("w").rounds[0].feedback is None
    real = pending.store().get("w").rounds[0].batch_id
    service.record_answer("w", 0, [1, 1, -1], batch=real)
    assert SessionStore(pending.session_root()).get("w").rounds[0].feedback == [1, 1, -1]


def test_a_timed_out_wait_stays_answerable_until_its_batch_is_answered():
    b = FeedbackBroker()
    w = b.open("w", "4", "p", 0, 3, request={"batch": "ab" * 8})
    with pytest.raises(FeedbackTimeout):
        b.wait(w, 0.1, poll_s=0.02)
    assert b.waiting() == [] and b.timed_out() == [w] and w.request["batch"] == "ab" * 8
    assert b.answer("w", "4", "p", 0, [1, 1, 1]) == "no_wait"  # the node is gone: the route records on the session
    b.settle("w", 1)
    assert b.timed_out() == [w]  # another round: kept
    b.settle("w", 0)
    assert b.timed_out() == []
    b.open("w", "4", "p", 0, 3)
    with pytest.raises(FeedbackTimeout):
        b.wait(b.waiting()[0], 0.05, poll_s=0.02)
    b.open("w", "4", "q", 1, 3)  # the node waits again: the timed-out entry is replaced
    assert b.timed_out() == []


def _record_in_thread(state, timeout_s=60):
    """The real Record node, as ComfyUI's worker thread runs it (browser path)."""
    mm = types.SimpleNamespace(throw_exception_if_processing_interrupted=lambda: None,
                               InterruptProcessingException=type("Interrupt", (Exception,), {}))
    fake_nodes = types.SimpleNamespace(PreviewImage=lambda: types.SimpleNamespace(
        save_images=lambda *a, **k: {"ui": {"images": [{"filename": "x.png"}]}}))
    comfy = types.SimpleNamespace(model_management=mm)
    sys.modules.update({"comfy": comfy, "comfy.model_management": mm, "nodes": fake_nodes})
    out = {}

    def run():
        try:
            out["result"] = papa_nodes.PAPARecordPreference().run(torch.zeros(3, 8, 8, 3),
                                                                  SessionRef("w", CFG), "", timeout_s, "4")
        except Exception as e:  # noqa: BLE001 - the test reads it
            out["error"] = e

    t = threading.Thread(target=run)
    t.start()
    return t, out


@pytest.fixture
def comfy_stubs(monkeypatch):
    for name in ("comfy", "comfy.model_management", "nodes"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    yield
    for name in ("comfy", "comfy.model_management", "nodes"):
        sys.modules.pop(name, None)


def test_timed_out_batch_is_restored_by_the_route_and_answered_from_the_gallery(pending, comfy_stubs):
    t, out = _record_in_thread(pending, timeout_s=1)
    t.join(30)
    assert "no answer within 1 s" in str(out["error"]) and "same batch is shown again" in str(out["error"])
    batch = pending.store().get("w").rounds[0].batch_id
    body = {"protocol": 1, "session": "w", "node_id": "4", "round": 0, "batch": batch, "feedback": [1, -1, 0]}
    (s1, waiting), (s2, saved), (s3, again) = call_routes(routes, [
        ("GET", protocol.ROUTES["waiting"], None), ("POST", protocol.ROUTES["feedback"], json.dumps(body).encode()),
        ("GET", protocol.ROUTES["waiting"], None)])
    [req] = waiting["waiting"]
    assert (s1, req["state"], req["batch"], req["round"], len(req["images"])) == (200, "timed_out", batch, 0, 1)
    assert s2 == 200 and saved["saved"] and saved["delivered_to"] == "session"
    assert s3 == 200 and again["waiting"] == []
    assert SessionStore(pending.session_root()).get("w").rounds[0].feedback == [1, -1, 0]


def test_a_live_wait_is_listed_with_its_time_left_and_answered_once(pending, comfy_stubs):
    t, out = _record_in_thread(pending)
    deadline = time.monotonic() + 20
    while not pending.broker.waiting():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    batch = pending.store().get("w").rounds[0].batch_id
    body = {"protocol": 1, "session": "w", "node_id": "4", "round": 0, "batch": batch, "feedback": [0, 1, 1]}
    (s1, waiting), (s2, saved), (s3, replay) = call_routes(routes, [
        ("GET", protocol.ROUTES["waiting"], None), ("POST", protocol.ROUTES["feedback"], json.dumps(body).encode()),
        ("POST", protocol.ROUTES["feedback"], json.dumps(body).encode())])
    t.join(30)
    [req] = waiting["waiting"]
    assert req["state"] == "waiting" and 50 <= req["seconds_left"] <= 60 and req["batch"] == batch
    assert s2 == 200 and saved["delivered_to"] == "waiting node" and s3 == 409
    assert out["result"]["ui"]["papa"][0]["feedback"] == [0, 1, 1]


def test_cancel_drops_the_batch_so_the_next_queue_samples_anew(pending, comfy_stubs):
    t, out = _record_in_thread(pending, timeout_s=1)
    t.join(30)  # timed out: Cancel in the gallery now drops it
    [(status, _)] = call_routes(routes, [("POST", protocol.ROUTES["cancel"],
                                          json.dumps({"protocol": 1, "session": "w", "node_id": "4"}).encode())])
    assert status == 200
    s = SessionStore(pending.session_root()).get("w")
    assert s.rounds == [] and pending.broker.timed_out() == []


def test_discard_action_and_text_path_answer_the_pending_round(pending):
    ref = SessionRef("w", CFG)
    out = papa_nodes.PAPARecordPreference().run(torch.zeros(3, 8, 8, 3), ref, "+ - 0", 60, "4")
    assert out["ui"]["papa"][0]["source"] == "text"
    assert SessionStore(pending.session_root()).get("w").rounds[0].feedback == [1, -1, 0]
    s = pending.store().get("w")
    s.add_round(torch.randn(2, 4, 8, 8), {}, seeds=[9, 9])
    pending.store().save(s)
    summary = service.apply_session_action("w", "discard")
    assert summary["rounds"] == 1 and summary["pending_round"] is None
    with pytest.raises(FeedbackError, match="no batch waiting"):
        service.apply_session_action("w", "discard")
