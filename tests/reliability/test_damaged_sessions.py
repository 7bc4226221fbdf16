"""Nothing lost, nothing hung: the eight findings of the hostile-user pass (issue 20), one case each.

1. an answer acknowledged by the route survives a SIGKILL right after the 200;
2. a copied session folder is its own session and never writes into the original;
3. a session whose index was deleted or damaged is reported, never re-created, and recoverable;
4. files an index names must be regular files inside the folder (no /dev/zero symlink, no '../',
   no '/etc/passwd'), and one busy or damaged session never stalls another's routes;
5. a malformed index gets one clear error naming the field (route 409, never 500);
6. damaged feedback is refused on load, and a save that fails never leaves memory ahead of disk;
7. leftover temporary files are cleaned at start-up, and exports get the folder's usual mode;
8. a state-changing route refuses form posts and other origins.
Each case failed on the code before the fix (see docs/reliability.md).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
import types
import urllib.request
from pathlib import Path

import pytest
import torch

from papa_testkit.pack import load_pack

pack = load_pack()
from comfyui_papa.nodes import papa_nodes, protocol, routes, service  # noqa: E402
from comfyui_papa.nodes.common import SessionRef  # noqa: E402
from comfyui_papa.papa_core.errors import PapaError, SessionCorrupt, StorageError  # noqa: E402
from comfyui_papa.papa_core.lora import LoraConfig, init_lora_state  # noqa: E402
from comfyui_papa.papa_core.session import SessionStore  # noqa: E402

from papa_testkit.pack import call_routes, folder_hash  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]  # the workers run as modules from here
ANSWER_KILLS = int(os.environ.get("PAPA_ANSWER_KILLS", "3"))  # the full count: PAPA_ANSWER_KILLS=20
CFG = LoraConfig(rank=2, alpha=2.0)
MODULES = {"down_blocks.0.attentions.0.to_q": (8, 8)}
SESSION_ROUTE = protocol.ROUTES["session"] + "?name="

_opened: list[str] = []
_watch = {"on": False}
sys.addaudithook(lambda event, args: _watch["on"] and event == "open" and args and isinstance(args[0], str)
                 and _opened.append(args[0]))


@pytest.fixture
def world(tmp_path, isolated_store):
    """Session 'good': round 0 answered and trained on (4 images), round 1 pending (3 images)."""
    state = isolated_store
    store = state.store()
    s = store.create("good", "fp0", CFG, init_lora_state(MODULES, CFG), meta={"base_model": "sd15"})
    s.add_round(torch.randn(4, 4, 8, 8), {"c_crossattn": torch.randn(4, 77, 8)}, seeds=[1] * 4)
    s.record_feedback([1, -1, 0, 1])
    s.apply_update([s.rounds[0]], {k: v + 0.01 for k, v in s.lora_state.items()},
                   {"param_groups_json": torch.zeros(2, dtype=torch.uint8)}, {"loss": [0.5]})
    s.add_round(torch.randn(3, 4, 8, 8), {"c_crossattn": torch.randn(3, 77, 8)}, seeds=[2] * 3)
    store.save(s)
    store.forget("good")
    root = tmp_path / "sessions"
    return types.SimpleNamespace(tmp=tmp_path, root=root, folder=root / "good", state=state,
                                 index=root / "good" / "session.json")


def fresh_store(w):
    """As after a restart: a new store that knows only the disk."""
    w.state.reset_store()
    return w.state.store()


def edit_index(w, change) -> None:
    m = json.loads(w.index.read_text())
    change(m)
    w.index.write_text(json.dumps(m))


# --- 1. an acknowledged answer is on disk ------------------------------------------------------

def _http(port: int, method: str, path: str, body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status, json.loads(r.read())


@pytest.mark.parametrize("attempt", range(ANSWER_KILLS))
def test_an_acknowledged_answer_survives_a_kill_right_after_the_200(tmp_path, attempt):
    root = tmp_path / "sessions"
    proc = subprocess.Popen([sys.executable, "-m", "tests.reliability.answer_worker", str(root)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().split()
        assert line[:1] == ["READY"], proc.stderr.read()[-3000:] if proc.poll() is not None else line
        port = int(line[1])
        deadline = time.monotonic() + 60
        while not _http(port, "GET", SESSION_ROUTE + "answer")[1]["waiting"]:
            assert time.monotonic() < deadline, "the Record node never started waiting"
            time.sleep(0.05)
        values = [1.0, -1.0, 0.0, 1.0][attempt % 4:] + [1.0, -1.0, 0.0, 1.0][:attempt % 4]
        status, payload = _http(port, "POST", protocol.ROUTES["feedback"],
                                {"protocol": 1, "session": "answer", "node_id": "9", "round": 0, "feedback": values})
        proc.send_signal(signal.SIGKILL)  # the moment the person has seen "saved"
        assert status == 200 and payload["saved"] and payload["delivered_to"] == "waiting node"
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert SessionStore(root).get("answer").rounds[0].feedback == values


# --- 2. a copied folder --------------------------------------------------------------------------

def test_a_copied_folder_is_its_own_session_and_never_writes_into_the_original(world):
    shutil.copytree(world.folder, world.root / "copy")
    before = folder_hash(world.folder)
    store = fresh_store(world)
    s = store.get("copy")
    assert s.name == "copy" and s.meta["copied_from"] == "good"
    s.record_feedback([1, 1, -1])
    store.save(s)
    [(status, payload)] = call_routes(routes, [("GET", SESSION_ROUTE + "copy", None)])
    assert status == 200 and payload["summary"]["session"] == "copy"
    assert folder_hash(world.folder) == before, "the copy wrote into the original's folder"
    assert json.loads((world.root / "copy" / "session.json").read_text())["name"] == "copy"
    assert SessionStore(world.root).get("copy").rounds[1].feedback == [1, 1, -1]
    assert SessionStore(world.root).get("good").rounds[1].feedback is None


# --- 3. a lost or damaged index ------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["deleted", "truncated", "replaced by a folder"])
def test_a_session_whose_index_is_lost_is_reported_never_recreated_and_can_be_recovered(world, damage):
    original = SessionStore(world.root).get("good")
    if damage == "deleted":
        world.index.unlink()
    elif damage == "truncated":
        world.index.write_bytes(world.index.read_bytes()[:50])
    else:
        world.index.unlink()
        world.index.mkdir()
    before = folder_hash(world.folder)
    store = fresh_store(world)
    with pytest.raises(SessionCorrupt, match="recover"):
        store.open_or_create("good", "fp0", CFG, init_lora_state(MODULES, CFG))
    with pytest.raises(PapaError, match="recover"):
        papa_nodes.PAPASession().run("good", 2, 2.0, "attention", 0)
    [(status, payload)] = call_routes(routes, [("GET", SESSION_ROUTE + "good", None)])
    assert status == 409 and "recover" in payload["error"]
    assert folder_hash(world.folder) == before, "a damaged session was changed before anyone asked"
    if damage == "replaced by a folder":
        world.index.rmdir()
    summary = service.apply_session_action("good", "recover")
    assert (summary["rounds"], summary["updates"], summary["pending_round"]["round"]) == (2, 1, 1)
    s = SessionStore(world.root).get("good")
    assert [r.feedback for r in s.rounds] == [[1, -1, 0, 1], None]
    assert all(torch.equal(s.lora_state[k], original.lora_state[k]) for k in s.lora_state)
    with pytest.raises(PapaError, match="nothing to recover"):
        service.apply_session_action("good", "recover")


def test_recover_without_a_complete_version_says_so_and_deletes_nothing(world):
    world.index.unlink()
    for p in world.folder.glob("index-v*.json"):
        p.unlink()
    before = folder_hash(world.folder)
    fresh_store(world)
    with pytest.raises(SessionCorrupt, match="no complete version"):
        service.apply_session_action("good", "recover")
    assert folder_hash(world.folder) == before


# --- 4. files outside the folder, links, devices; one session never stalls another ---------------

def test_a_symlink_to_dev_zero_is_refused_at_once_and_other_sessions_keep_answering(world):
    blob = world.folder / json.loads(world.index.read_text())["files"]["lora"]["file"]
    blob.unlink()
    blob.symlink_to("/dev/zero")
    store = fresh_store(world)
    store.create("other", "fp0", CFG, init_lora_state(MODULES, CFG))
    store.forget("other")
    t0 = time.monotonic()
    (s1, p1), (s2, _) = call_routes(routes, [("GET", SESSION_ROUTE + "good", None),
                                             ("GET", SESSION_ROUTE + "other", None)], timeout=30)
    assert time.monotonic() - t0 < 10
    assert s1 == 409 and "symbolic link" in p1["error"] and s2 == 200


def test_a_busy_session_gets_a_bounded_answer_while_others_are_served(world, monkeypatch):
    import threading

    monkeypatch.setattr(routes, "READ_TIMEOUT_S", 0.5)
    store = fresh_store(world)
    store.create("other", "fp0", CFG, init_lora_state(MODULES, CFG))
    held, release = threading.Event(), threading.Event()

    def long_update():
        with store.locked("good"):
            held.set()
            release.wait(30)

    threading.Thread(target=long_update, daemon=True).start()
    held.wait(10)
    try:
        t0 = time.monotonic()
        (s1, p1), (s2, _) = call_routes(routes, [("GET", SESSION_ROUTE + "good", None),
                                                 ("GET", SESSION_ROUTE + "other", None)], timeout=30)
        assert time.monotonic() - t0 < 5
    finally:
        release.set()
    assert s1 == 503 and "busy" in p1["error"] and s2 == 200


@pytest.mark.parametrize("entry", ["../elsewhere/lora-v4.safetensors", "/etc/passwd", "lora-v1.safetensors/../x"])
def test_an_index_may_only_name_files_inside_its_folder(world, entry):
    elsewhere = world.root / "elsewhere"
    elsewhere.mkdir()
    lora = json.loads(world.index.read_text())["files"]["lora"]
    shutil.copy(world.folder / lora["file"], elsewhere / "lora-v4.safetensors")  # same hash: loads if followed
    edit_index(world, lambda m: m["files"]["lora"].update(file=entry))
    store = fresh_store(world)
    _opened.clear()
    _watch["on"] = True
    try:
        with pytest.raises(SessionCorrupt, match=r"files\.lora\.file"):
            store.get("good")
    finally:
        _watch["on"] = False
    assert not [p for p in _opened if "elsewhere" in p or p == "/etc/passwd"]


# --- 5. and 6. a malformed index, damaged feedback ------------------------------------------------

MALFORMED = [
    ("version missing", lambda m: m.pop("version"), "'version' is missing"),
    ("base_fingerprint missing", lambda m: m.pop("base_fingerprint"), "'base_fingerprint' is missing"),
    ("files null", lambda m: m.update(files=None), "'files' must be dict"),
    ("rounds not a list", lambda m: m.update(rounds="x"), "'rounds' must be list"),
    ("round not an object", lambda m: m["rounds"].__setitem__(0, 3), "'rounds[0]' must be an object"),
    ("seeds of strings", lambda m: m["rounds"][0].update(seeds=["a"]), "'rounds[0].seeds'"),
    ("feedback as a string", lambda m: m["rounds"][0].update(feedback="+-0+"), "'rounds[0].feedback' must be list"),
    ("feedback too short", lambda m: m["rounds"][0].update(feedback=[1]), "'rounds[0].feedback' is damaged"),
    ("feedback out of range", lambda m: m["rounds"][0].update(feedback=[1, 7, 0, 1]), "'rounds[0].feedback'"),
    ("lora_config without rank", lambda m: m["lora_config"].pop("rank"), "'lora_config' is damaged"),
    ("a round's file missing", lambda m: m["files"].pop("round-1"), "'files.round-1' is missing"),
    ("a bad checksum field", lambda m: m["files"]["lora"].update(sha256=5), "'files.lora.sha256'"),
    ("meta a list", lambda m: m.update(meta=[]), "'meta' must be dict"),
]


@pytest.mark.parametrize("name, change, field", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_a_malformed_index_gets_one_clear_error_naming_the_field(world, name, change, field):
    edit_index(world, change)
    before = folder_hash(world.folder)
    fresh_store(world)
    with pytest.raises(SessionCorrupt) as info:
        papa_nodes.PAPASession().run("good", 2, 2.0, "attention", 0)
    assert field in str(info.value) and "recover" in str(info.value)
    [(status, payload)] = call_routes(routes, [("GET", SESSION_ROUTE + "good", None)])
    assert status == 409 and field in payload["error"], payload
    assert folder_hash(world.folder) == before


def test_nan_feedback_on_disk_is_refused_on_load(world):
    text = world.index.read_text()
    m = json.loads(text)
    m["rounds"][0]["feedback"] = [0.123456789, 1, 0, 1]
    world.index.write_text(json.dumps(m).replace("0.123456789", "NaN"))
    with pytest.raises(SessionCorrupt, match=r"'rounds\[0\]\.feedback' is damaged|not valid JSON"):
        fresh_store(world).get("good")


def test_a_failed_save_never_leaves_memory_ahead_of_disk(world):
    store = fresh_store(world)
    s = store.get("good")
    s.meta["gain"] = float("nan")  # JSON cannot hold it: the save fails after the tensor files
    s.record_feedback([1, 1, -1])
    with pytest.raises(StorageError, match="unchanged at its last saved state"):
        store.save(s)
    again = store.get("good")
    assert again is not s and again.rounds[1].feedback is None and "gain" not in again.meta


# --- 7. leftovers and permissions ---------------------------------------------------------------

def test_leftover_temporaries_are_cleaned_at_start_up_and_exports_are_readable_by_others(world, monkeypatch):
    loras = world.tmp / "loras"
    (loras / "sub").mkdir(parents=True)
    leftovers = [world.folder / ".lora-v9.safetensors.ab12cd34.tmp", loras / ".papa_lora.safetensors.x1y2z3w4.tmp",
                 loras / "sub" / ".cats.safetensors.k9_a8b7c.tmp"]
    others = [loras / "notes.tmp", loras / ".hidden", loras / "mine.safetensors", world.folder / "readme.txt"]
    for p in leftovers + others:
        p.write_bytes(b"x" * 100)
    from aiohttp import web

    server = types.ModuleType("server")
    server.PromptServer = types.SimpleNamespace(instance=types.SimpleNamespace(routes=web.RouteTableDef()))
    monkeypatch.setitem(sys.modules, "server", server)
    pack._start()  # what ComfyUI runs when it imports the pack
    assert not [p for p in leftovers if p.exists()]
    assert all(p.exists() for p in others)

    mask = os.umask(0)
    os.umask(mask)
    fresh_store(world)
    out = papa_nodes.PAPAExportLoRA().run(SessionRef("good", CFG), "shared", "new version", "fp32")
    mode = stat.S_IMODE((loras / out["result"][0]).stat().st_mode)
    assert mode == 0o666 & ~mask, oct(mode)
    assert stat.S_IMODE(world.index.stat().st_mode) == 0o666 & ~mask


# --- 8. form posts and other origins -------------------------------------------------------------

FEEDBACK = json.dumps({"protocol": 1, "session": "good", "round": 1, "feedback": [1, 1, 1]}).encode()
RESET = json.dumps({"protocol": 1, "session": "good", "action": "reset"}).encode()


@pytest.mark.parametrize("path, body", [(protocol.ROUTES["action"], RESET), (protocol.ROUTES["feedback"], FEEDBACK)])
@pytest.mark.parametrize("headers, status", [
    ({"Content-Type": "text/plain", "Origin": "null"}, 403),
    ({"Content-Type": "text/plain"}, 415),
    ({"Content-Type": "application/x-www-form-urlencoded"}, 415),
    ({"Content-Type": "application/json", "Origin": "http://evil.example"}, 403),
])
def test_a_state_changing_route_refuses_form_posts_and_other_origins(world, path, body, headers, status):
    before = folder_hash(world.folder)
    [(got, payload)] = call_routes(routes, [("POST", path, body, headers)])
    assert got == status and payload["ok"] is False, payload
    assert folder_hash(world.folder) == before


def test_the_same_origin_and_scripts_without_origin_are_served(world):
    from aiohttp.test_utils import make_mocked_request

    same = make_mocked_request("POST", "/papa/v1/action", headers={"Host": "127.0.0.1:8188", "Origin":
                                                                   "http://127.0.0.1:8188", "Content-Type":
                                                                   "application/json"})
    routes._check_origin(same)  # does not raise
    [(status, payload)] = call_routes(routes, [("POST", protocol.ROUTES["feedback"], FEEDBACK)])
    assert status == 200 and payload["saved"]
