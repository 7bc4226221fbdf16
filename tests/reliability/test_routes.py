"""Route security: /papa/v1/* on a real aiohttp server (no ComfyUI needed).

Promises: names validated against one pattern; bodies size-limited; only POST changes state; a
malformed or hostile body never raises inside the server (always a 4xx JSON answer); the routes
never open a file outside the session folder.
"""
from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

import pytest
import torch

from papa_testkit.pack import load_pack

pack = load_pack()
from comfyui_papa.nodes import protocol, routes, state  # noqa: E402
from comfyui_papa.papa_core.lora import LoraConfig, init_lora_state  # noqa: E402

from papa_testkit.pack import call_routes, folder_hash  # noqa: E402

_opened: list[str] = []
_watch = {"on": False}


def _audit(event, args):
    if _watch["on"] and event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        _opened.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)


@pytest.fixture
def root(tmp_path, isolated_store):
    cfg = LoraConfig(rank=2, alpha=2.0)
    s = state.store().create("good", "fp", cfg, init_lora_state({"a.to_q": (4, 4)}, cfg))
    s.add_round(torch.randn(3, 4, 2, 2), {}, seeds=[0, 0, 0])
    state.store().save(s)
    state.store().forget("good")
    return tmp_path / "sessions"


def call(requests):
    return call_routes(routes, requests)


def hostile_bodies(n: int, seed: int = 0) -> list[bytes]:
    rng = random.Random(seed)
    atoms = [None, True, -1, 0, 1, 2**70, -1e308, 1e-320, "", "../..", "a" * 5000, "\u202e\u0000", [], {}, [1] * 300,
             "good", "+", "NaN", {"$ref": "#"}]
    keys = ["protocol", "session", "round", "feedback", "node_id", "prompt_id", "action", "__proto__", "extra"]
    out = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.2:
            out.append(bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 400))))
        elif kind < 0.3:
            d = rng.randint(1, 50000)
            out.append(b"[" * d + b"]" * d if rng.random() < 0.5 else b'{"a":' * d + b"1" + b"}" * d)
        else:
            body = {k: rng.choice(atoms) for k in rng.sample(keys, rng.randint(0, len(keys)))}
            if rng.random() < 0.5:
                body["protocol"] = protocol.PROTOCOL_VERSION
            if rng.random() < 0.3:
                body["feedback"] = [rng.choice([1, -1, 0, 0.5, 7, "x", None]) for _ in range(rng.randint(0, 5))]
            out.append(json.dumps(body).encode())
    return out


def test_hostile_bodies_always_get_a_4xx_and_never_touch_other_files(root):
    before = folder_hash(root)
    reqs = [("POST", rng_path, body) for body, rng_path in zip(
        hostile_bodies(300), [protocol.ROUTES[k] for k in ("feedback", "cancel", "action")] * 100)]
    _opened.clear()
    _watch["on"] = True
    try:
        answers = call(reqs)
    finally:
        _watch["on"] = False
    statuses = [s for s, _ in answers]
    assert all(400 <= s < 500 for s in statuses), sorted(set(statuses))
    assert all(p and p.get("ok") is False and p.get("error") for _, p in answers)
    outside = [p for p in _opened if not p.endswith((".py", ".pyc", ".so")) and
               not Path(p).resolve().is_relative_to(root.resolve())]
    assert not outside, outside[:5]
    # a hostile body may only ever change state through a valid answer to the pending round
    assert folder_hash(root) == before or state.store().get("good").rounds[-1].feedback is not None


def test_only_post_changes_state_and_wrong_methods_are_refused(root):
    before = folder_hash(root)
    gets = [("GET", protocol.ROUTES["protocol"], None), ("GET", protocol.ROUTES["sessions"], None),
            ("GET", protocol.ROUTES["session"] + "?name=good", None)] * 5
    wrong = [(m, protocol.ROUTES[k], b"{}") for m in ("PUT", "DELETE", "PATCH") for k in protocol.ROUTES] + \
            [("GET", protocol.ROUTES[k], None) for k in ("feedback", "cancel", "action")]
    answers = call(gets + wrong)
    assert all(s == 200 for s, _ in answers[: len(gets)])
    assert all(s == 405 for s, _ in answers[len(gets):])
    assert folder_hash(root) == before


@pytest.mark.parametrize("name", ["../good", "..", "/etc/passwd", "good/../../x", "%2e%2e", "g" * 65, "", "go od",
                                  "\u00e9"])
def test_session_names_are_validated_before_any_file_access(root, name):
    from urllib.parse import quote

    _opened.clear()
    _watch["on"] = True
    try:
        [(status, payload)] = call([("GET", protocol.ROUTES["session"] + "?name=" + quote(name), None)])
    finally:
        _watch["on"] = False
    assert status == 400 and "session must be" in payload["error"]
    assert not [p for p in _opened if not p.endswith((".py", ".pyc", ".so"))]


def test_a_valid_answer_is_recorded_and_replayed_answers_are_refused(root):
    body = json.dumps({"protocol": 1, "session": "good", "round": 0, "feedback": [1, -1, 0]}).encode()
    (s1, p1), (s2, p2) = call([("POST", protocol.ROUTES["feedback"], body)] * 2)
    assert s1 == 200 and p1["delivered_to"] == "session"
    assert s2 == 409 and "no pending round" in p2["error"]
    state.store().forget("good")
    assert state.store().get("good").rounds[0].feedback == [1.0, -1.0, 0.0]
