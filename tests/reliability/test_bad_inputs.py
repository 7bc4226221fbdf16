"""Bad-input sweep over the public surface: node inputs, route bodies, files on disk, engine calls.

Every case must raise (or answer) a clear error that names the fix, and leave the stored session
exactly as it was (a hash of every file in the session folder, before and after).
"""
from __future__ import annotations

import json
import math
import os
import types

import pytest
import torch

from papa_testkit.pack import load_pack

pack = load_pack()
from comfyui_papa.nodes import papa_nodes, routes, state  # noqa: E402
from comfyui_papa.nodes.common import SessionRef  # noqa: E402
from comfyui_papa.nodes.loop import update_config  # noqa: E402
from comfyui_papa.nodes.service import apply_session_action  # noqa: E402
from comfyui_papa.papa_core.errors import PapaError  # noqa: E402
from comfyui_papa.papa_core.lora import LoraConfig, init_lora_state  # noqa: E402
from comfyui_papa.papa_core.lora_io import export_lora, import_lora  # noqa: E402

from papa_testkit.pack import call_routes, folder_hash  # noqa: E402

CFG = LoraConfig(rank=2, alpha=2.0)
MODULES = {"down_blocks.0.attentions.0.to_q": (8, 8), "up_blocks.0.resnets.0.conv1": (8, 8, 3, 3)}


@pytest.fixture
def world(tmp_path, isolated_store):
    """A stored session with one trained round and one pending round, a loras folder, and a valid LoRA file."""
    store = state.store()
    s = store.create("good", "fp0", CFG, init_lora_state(MODULES, CFG), meta={"base_model": "sd15"})
    s.add_round(torch.randn(4, 4, 8, 8), {"c_crossattn": torch.randn(4, 77, 8)}, seeds=[1] * 4)
    s.record_feedback([1, -1, 0, 1])
    lora = {k: v + 0.01 for k, v in s.lora_state.items()}
    s.apply_update([s.rounds[0]], lora, {"param_groups_json": torch.zeros(2, dtype=torch.uint8)}, {"loss": [0.5]})
    s.add_round(torch.randn(3, 4, 8, 8), {"c_crossattn": torch.randn(3, 77, 8)}, seeds=[2] * 3)
    store.save(s)
    lora_file = tmp_path / "good_lora.safetensors"
    export_lora(lora_file, s.lora_state, CFG)
    return types.SimpleNamespace(tmp=tmp_path, store=store, folder=tmp_path / "sessions" / "good",
                                 ref=SessionRef("good", CFG), lora_file=lora_file)


# --- the cases: (id, callable(world), expected error type, words of the message that name the fix) -----

def _record(text, n=3, ref=None):
    return lambda w: papa_nodes.PAPARecordPreference().run(torch.zeros(n, 8, 8, 3), ref or w.ref, text, 60, "5")


def _session(name, rank=2):
    return lambda w: papa_nodes.PAPASession().run(name, rank, float(rank), "attention", 0)


def _export(name, if_exists="new version"):
    return lambda w: papa_nodes.PAPAExportLoRA().run(w.ref, name, if_exists, "fp32")


def _update_cfg(preset, algorithm, **expert):
    return lambda w: update_config(preset, algorithm, 64, **expert)


def _write(name, data):
    def f(w):
        p = w.tmp / name
        p.write_bytes(data(w) if callable(data) else data)
        return import_lora(p, list(MODULES), CFG)
    return f


def _tensor_file(tensors):
    from safetensors.torch import save

    return lambda w: save(tensors(w) if callable(tensors) else tensors)


def _lora_tensors(w, **change):
    from safetensors.torch import load_file

    t = load_file(str(w.lora_file))
    for k, fn in change.items():
        t = fn(t)
    return t


def _tamper(file_of, mutate):
    """Load the session after ``mutate``-ing one of its files (restored afterwards)."""
    def f(w):
        p = file_of(w)
        original = p.read_bytes()
        try:
            p.write_bytes(mutate(original))
            w.store.forget("good")
            w.store.get("good")
        finally:
            p.write_bytes(original)
            w.store.forget("good")
    return f


def _session_json(mutate):
    return _tamper(lambda w: w.folder / "session.json", mutate)


def _blob(mutate):
    return _tamper(lambda w: w.folder / json.loads((w.folder / "session.json").read_text())["files"]["lora"]["file"],
                   mutate)


def _engine(fn):
    return lambda w: fn(w.store.get("good"))


def _readonly_save(w):
    s = w.store.get("good")
    s.record_feedback([1, 1, -1])
    real = os.replace

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")

    os.replace = refuse  # as root, chmod cannot make a folder read-only: refuse the rename instead
    try:
        w.store.save(s)
    finally:
        os.replace = real


def _route(body: bytes | dict, path="feedback"):
    def f(w):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        [(status, payload)] = call_routes(routes, [("POST", f"/papa/v1/{path}", data)])
        assert 400 <= status < 500, (status, payload)
        raise PapaError(payload["error"])  # the route's answer, checked like any other message
    return f


P = {"protocol": 1}
CASES = [
    # node inputs
    ("record: too many symbols", _record("+ - + -"), "give exactly one per image"),
    ("record: unknown symbol", _record("+ ? -"), "use + (like), - (dislike), 0 (neutral)"),
    ("record: graded out of range", _record("+ 2 -"), "outside [-1, 1]"),
    ("record: images do not match the batch", _record("+ -", n=2), "connect the images output"),
    ("record: unknown session", _record("+ - +", ref=SessionRef("ghost", CFG)), "Generate Batch"),
    ("session: traversal name", _session("../x"), "letters, digits"),
    ("session: non-UTF-8 name", _session("caf\udce9"), "letters, digits"),
    ("session: empty name", _session(""), "letters, digits"),
    ("session: other rank for an existing name", _session("good", rank=8), "set them back"),
    ("export: parent folder", _export("../../evil"), "nothing that leaves the loras folder"),
    ("export: absolute path", _export("/etc/evil"), "nothing that leaves the loras folder"),
    ("export: empty name", _export("  "), "type a name"),
    ("export: NUL byte", _export("a\x00b"), "letters, digits"),
    ("export: Windows traversal", _export("..\\..\\evil"), "nothing that leaves the loras folder"),
    ("export: bad if_exists", _export("ok", "clobber"), "if_exists must be one of"),
    ("update: unknown preset", _update_cfg("best", "PAPA"), "choose one of"),
    ("update: unknown algorithm", _update_cfg("default", "SGD"), "PAPA or EPAPA"),
    ("update: negative coefficient", _update_cfg("default", "PAPA", pref_coef=-0.5), "must be a finite number ≥ 0"),
    ("update: zero learning rate", _update_cfg("default", "PAPA", lr=0.0), "lr must be a positive number"),
    ("generate: huge batch", lambda w: papa_nodes.PAPAGenerateBatch().run(
        None, [], [], None, w.ref, 100000, 0, 20, 7.0, "euler", "normal", 512, 512), "batch_size must be"),
    ("undo: nothing to undo on a fresh session", lambda w: (
        w.store.create("fresh", "fp0", CFG, init_lora_state(MODULES, CFG)),
        apply_session_action("fresh", "undo")), "no update to undo"),
    # route bodies
    ("route: not JSON", _route(b"{nope"), "UTF-8 JSON"),
    ("route: not UTF-8", _route(b"\xff\xfe\xfa"), "UTF-8 JSON"),
    ("route: deeply nested", _route(b"[" * 30000 + b"]" * 30000), "UTF-8 JSON"),
    ("route: too large", _route(b" " * 70000), "larger than"),
    ("route: old protocol", _route({"protocol": 0, "session": "good", "round": 1, "feedback": [1, 1, 1]}), "reload"),
    ("route: traversal session", _route({**P, "session": "../good", "round": 1, "feedback": [1]}), "letters, digits"),
    ("route: unknown session", _route({**P, "session": "ghost", "round": 0, "feedback": [1]}), "check the name"),
    ("route: wrong round", _route({**P, "session": "good", "round": 0, "feedback": [1, 1, 1]}), "generate a batch"),
    ("route: NaN feedback", _route(b'{"protocol": 1, "session": "good", "round": 1, "feedback": [NaN, 1, 1]}'),
     "number in [-1, 1]"),
    ("route: wrong count", _route({**P, "session": "good", "round": 1, "feedback": [1]}), "one per image"),
    ("route: feedback not a list", _route({**P, "session": "good", "round": 1, "feedback": "+++"}), "list of"),
    ("route: unknown action", _route({**P, "session": "good", "action": "delete"}, "action"), "one of undo, reset"),
    # files on disk
    ("lora file: truncated", _write("t.safetensors", lambda w: w.lora_file.read_bytes()[:300]), "re-export it"),
    ("lora file: not safetensors", _write("x.safetensors", b"hello world" * 10), "re-export it"),
    ("lora file: foreign keys", _write("f.safetensors", _tensor_file({"model.weight": torch.zeros(2)})),
     "kohya LoRA naming"),
    ("lora file: another base model", _write("o.safetensors", _tensor_file(
        {"lora_unet_mid_block_x.lora_down.weight": torch.zeros(2, 8), "lora_unet_mid_block_x.lora_up.weight":
         torch.zeros(8, 2)})), "another base model"),
    ("lora file: other rank", _write("r.safetensors", _tensor_file(lambda w: _lora_tensors(
        w, r=lambda t: {k: (v.repeat(2, *[1] * (v.ndim - 1)) if "down" in k else v) for k, v in t.items()}))),
     "has rank 4"),
    ("lora file: integer tensors", _write("i.safetensors", _tensor_file(lambda w: _lora_tensors(
        w, i=lambda t: {k: v.to(torch.int32) for k, v in t.items()}))), "re-export it"),
    ("lora file: NaN weights", _write("n.safetensors", _tensor_file(lambda w: _lora_tensors(
        w, n=lambda t: {k: v.fill_(math.nan) if "up" in k else v for k, v in t.items()}))), "NaN or inf"),
    ("session.json: not JSON", _session_json(lambda b: b[:40]), "move the folder away"),
    ("session.json: not UTF-8", _session_json(lambda b: b"\xff\xfe" + b), "move the folder away"),
    ("session.json: foreign file", _session_json(lambda b: b'{"format": "other"}'), "not a PAPA session"),
    ("session.json: newer version", _session_json(
        lambda b: json.dumps(dict(json.loads(b), format_version=99)).encode()), "update the pack"),
    ("session blob: truncated", _blob(lambda b: b[: len(b) // 2]), "restore the folder"),
    ("session blob: bit flip", _blob(lambda b: b[:-1] + bytes([b[-1] ^ 1])), "restore the folder"),
    # engine calls
    ("latents with NaN", _engine(lambda s: s.add_round(torch.full((2, 4, 8, 8), math.nan), {}, [0, 0])),
     "generate again"),
    ("latents with inf", _engine(lambda s: s.add_round(torch.full((2, 4, 8, 8), math.inf), {}, [0, 0])),
     "generate again"),
    ("latents of the wrong rank", _engine(lambda s: s.add_round(torch.zeros(4, 8, 8), {}, [0] * 4)), "[B, C, H, W]"),
    ("seeds do not match the batch", _engine(lambda s: s.add_round(torch.zeros(2, 4, 8, 8), {}, [0])), "seeds for"),
    ("conditioning of another batch", _engine(lambda s: s.add_round(torch.zeros(2, 4, 8, 8),
                                                                    {"c": torch.zeros(3, 4)}, [0, 0])), "has batch 3"),
    ("feedback on a trained round", _engine(lambda s: s.record_feedback([1, 1, 1, 1], round_index=0)),
     "undo that update first"),
    ("LoRA of another shape", _engine(lambda s: s.set_lora({k: torch.zeros(1) for k in s.lora_state})),
     "different rank or base model"),
    ("session folder not writable", _readonly_save, "make the folder writable"),
]


@pytest.mark.parametrize("name, call, fix", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_clearly_and_changes_nothing(world, name, call, fix):
    before = folder_hash(world.folder)
    with pytest.raises(PapaError) as info:
        call(world)
    assert fix in str(info.value), f"{name}: message does not say what to do: {info.value}"
    assert folder_hash(world.folder) == before, f"{name} changed the stored session"
    world.store.forget("good")
    assert world.store.get("good").version  # still loads


def test_the_sweep_is_wide_enough():
    assert len(CASES) >= 40
