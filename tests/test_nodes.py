"""The node layer's own logic, without ComfyUI: protocol, waits, export paths, configs, the text path."""
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
from comfyui_papa.nodes import papa_nodes, protocol, state  # noqa: E402
from comfyui_papa.nodes.common import SessionRef  # noqa: E402
from comfyui_papa.papa_core.export import lora_output_path  # noqa: E402
from comfyui_papa.nodes.waiting import FeedbackBroker, FeedbackCancelled, FeedbackTimeout  # noqa: E402
from comfyui_papa.papa_core.errors import FeedbackError, PapaError  # noqa: E402
from comfyui_papa.papa_core.lora import LoraConfig, init_lora_state, lora_shapes  # noqa: E402
from comfyui_papa.papa_core.update import stack_conditioning  # noqa: E402


# --- registration and declarations -------------------------------------------------------------

@pytest.fixture
def fake_comfy(monkeypatch):
    """Just enough of ComfyUI for INPUT_TYPES and the export node: samplers and folder_paths."""
    comfy = types.ModuleType("comfy")
    samplers = types.ModuleType("comfy.samplers")
    samplers.KSampler = type("KSampler", (), {"SAMPLERS": ["euler"], "SCHEDULERS": ["normal"]})
    comfy.samplers = samplers
    monkeypatch.setitem(sys.modules, "comfy", comfy)
    monkeypatch.setitem(sys.modules, "comfy.samplers", samplers)
    return comfy


def test_every_node_is_declared_for_the_menu_with_tooltips(fake_comfy):
    assert set(pack.NODE_CLASS_MAPPINGS) >= {"PAPA_Session", "PAPA_GenerateBatch", "PAPA_RecordPreference",
                                             "PAPA_Update", "PAPA_ExportLoRA"}
    assert pack.WEB_DIRECTORY == "./web"
    for node_id, cls in pack.NODE_CLASS_MAPPINGS.items():
        assert cls.CATEGORY == "PAPA" and cls.DESCRIPTION and node_id in pack.NODE_DISPLAY_NAME_MAPPINGS
        assert hasattr(cls, cls.FUNCTION)
        for section in ("required", "optional"):
            for name, spec in cls.INPUT_TYPES().get(section, {}).items():
                assert spec[1].get("tooltip"), f"{node_id}.{name} lacks a tooltip"
    assert pack.NODE_CLASS_MAPPINGS["PAPA_ExportLoRA"].OUTPUT_NODE


# --- protocol ---------------------------------------------------------------------------------

def test_protocol_accepts_a_good_post_and_describes_itself():
    p = protocol.parse_feedback_post({"protocol": 1, "session": "cats", "prompt_id": "ab-12", "node_id": "5:3",
                                      "round": 2, "feedback": [1, -1, 0, "+", 0.5]})
    assert p.feedback == [1.0, -1.0, 0.0, 1.0, 0.5] and p.node_id == "5:3"
    d = json.loads(json.dumps(protocol.describe()))
    assert d["protocol"] == protocol.PROTOCOL_VERSION and d["routes"]["feedback"].startswith("/papa/")


@pytest.mark.parametrize("body, why", [
    ([], "JSON object"),
    ({"session": "a", "round": 0, "feedback": [1]}, "protocol must be"),
    ({"protocol": 1, "session": "../x", "round": 0, "feedback": [1]}, "session must be"),
    ({"protocol": 1, "session": "a" * 65, "round": 0, "feedback": [1]}, "session must be"),
    ({"protocol": 1, "session": "a", "round": -1, "feedback": [1]}, "round must be"),
    ({"protocol": 1, "session": "a", "round": True, "feedback": [1]}, "round must be"),
    ({"protocol": 1, "session": "a", "round": 0, "feedback": []}, "feedback must be a list"),
    ({"protocol": 1, "session": "a", "round": 0, "feedback": [1] * 300}, "feedback must be a list"),
    ({"protocol": 1, "session": "a", "round": 0, "feedback": [float("nan")]}, "feedback[0]"),
    ({"protocol": 1, "session": "a", "round": 0, "feedback": [2]}, "feedback[0]"),
    ({"protocol": 1, "session": "a", "round": 0, "feedback": ["x"]}, "feedback[0]"),
    ({"protocol": 1, "session": "a", "round": 0, "feedback": [1], "node_id": "a/b"}, "node_id"),
])
def test_protocol_rejects_bad_posts_with_a_reason(body, why):
    with pytest.raises(protocol.ProtocolError, match=__import__("re").escape(why)):
        protocol.parse_feedback_post(body)


# --- waiting for the browser --------------------------------------------------------------------

def test_broker_delivers_only_a_matching_answer():
    b = FeedbackBroker()
    w = b.open("s", "7", "p1", round_index=3, batch_size=2)
    assert b.answer("s", "7", "p1", 2, [1, -1]) == "wrong_round"
    assert b.answer("s", "7", "p1", 3, [1]) == "wrong_count"
    assert b.answer("other", "7", "p1", 3, [1, -1]) == "no_wait"
    assert b.answer("s", "7", "p2", 3, [1, -1]) == "no_wait"  # another prompt's tab
    threading.Timer(0.2, lambda: b.answer("s", "7", "p1", 3, [1, -1])).start()
    assert b.wait(w, timeout_s=10) == [1, -1]
    assert b.waiting() == []


def test_broker_cancel_timeout_interrupt_and_replacement():
    b = FeedbackBroker()
    w = b.open("s", "1", None, 0, 1)
    threading.Timer(0.1, lambda: b.cancel("s", "1", None)).start()
    with pytest.raises(FeedbackCancelled):
        b.wait(w, 10)
    w = b.open("s", "1", None, 0, 1)
    t0 = time.monotonic()
    with pytest.raises(FeedbackTimeout):
        b.wait(w, 0.3, poll_s=0.05)
    assert time.monotonic() - t0 < 2 and b.waiting() == []

    class Interrupted(Exception):
        pass

    flag = {"on": False}

    def check():
        if flag["on"]:
            raise Interrupted()

    w = b.open("s", "1", None, 0, 1)
    threading.Timer(0.1, lambda: flag.update(on=True)).start()
    with pytest.raises(Interrupted):
        b.wait(w, 10, check_interrupt=check, poll_s=0.05)
    old = b.open("s", "2", None, 0, 1)
    b.open("s", "2", None, 1, 1)  # a re-run of the same node releases the stale wait
    with pytest.raises(FeedbackCancelled):
        b.wait(old, 1)


# --- export paths -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a/../../b", "..", "", "   ", "a\\..\\..\\b", ".hidden",
                                  "C:/x", "x\x00y", "name.", "a//b", "ünïcode"])
def test_export_refuses_names_that_leave_the_folder(tmp_path, name):
    with pytest.raises(PapaError):
        lora_output_path(tmp_path / "loras", name)


def test_export_names_versions_and_overwrite(tmp_path):
    root = tmp_path / "loras"
    root.mkdir()
    assert lora_output_path(root, "cats") == root.resolve() / "cats.safetensors"
    assert lora_output_path(root, "sub/cats.safetensors") == root.resolve() / "sub" / "cats.safetensors"
    (root / "cats.safetensors").write_bytes(b"x")
    assert lora_output_path(root, "cats").name == "cats_2.safetensors"
    (root / "cats_2.safetensors").write_bytes(b"x")
    assert lora_output_path(root, "cats").name == "cats_3.safetensors"
    assert lora_output_path(root, "cats", "overwrite").name == "cats.safetensors"
    with pytest.raises(PapaError, match="already exists"):
        lora_output_path(root, "cats", "error")


# --- update settings ---------------------------------------------------------------------------

def test_update_inputs_show_the_presets_real_values_and_map_onto_them():
    """No sentinel on screen: the advanced inputs' defaults are the default preset's values, and each preset's
    values (what the page shows when it is picked) rebuild exactly that preset."""
    from comfyui_papa.nodes.loop import RAW_LR, UPDATE_PRESET_NAMES, expert_values, update_config
    from comfyui_papa.papa_core.trust_region import STRENGTHS
    from comfyui_papa.papa_core.update import UPDATE_PRESETS

    shown = papa_nodes.PAPAUpdate.INPUT_TYPES()["optional"]
    for name, value in expert_values("default").items():
        assert shown[name][1]["default"] == value
        if name == "learning_strength":  # the one knob in plain sight
            assert value in STRENGTHS and not shown[name][1].get("advanced")
        else:
            assert shown[name][1]["advanced"] is True and value > 0  # a real value, not "0 / -1 = the preset's"
    for preset in UPDATE_PRESET_NAMES:
        algorithm = "EPAPA" if UPDATE_PRESETS[preset].objective.k else "PAPA"
        p = UPDATE_PRESETS[preset]
        for c in (update_config(preset, algorithm, p.objective.max_batch),  # API: inputs left out
                  update_config(preset, algorithm, p.objective.max_batch, **expert_values(preset))):  # the page
            assert c == p, preset
    c = update_config("default", "PAPA", 64, lr=1e-3, steps=5, timesteps_per_image=8, pref_coef=0.5, model_coef=0.0)
    assert (c.objective.k, c.lr, c.steps, c.objective.timesteps_per_image) == (0, 1e-3, 5, 8)
    assert (c.objective.pref_coef, c.objective.model_coef, c.objective.loss) == (0.5, 0.0, "anchored")
    assert update_config("reference", "EPAPA", 64, k=300).objective.k == 300
    assert update_config("default", "EPAPA", 64, learning_strength="gentle").strength == STRENGTHS["gentle"]
    assert update_config("default", "EPAPA", 64, learning_strength=RAW_LR).strength is None
    assert update_config("reference", "PAPA", 64, learning_strength="strong").strength == STRENGTHS["strong"]
    with pytest.raises(PapaError, match="learning_strength must be one of"):
        update_config("default", "EPAPA", 64, learning_strength="max")
    with pytest.raises(PapaError):
        update_config("nope", "PAPA", 64)
    with pytest.raises(PapaError):
        update_config("default", "PAPA", 64, pref_coef=-0.5)


def test_conditioning_of_different_lengths_is_batched_exactly():
    """Prompts of 77 and 154 tokens replay together: repeating the context leaves attention unchanged."""
    a, b = torch.randn(77, 16), torch.randn(154, 16)
    stacked = stack_conditioning([a, b])
    assert stacked.shape == (2, 154, 16)
    q = torch.randn(1, 5, 16)
    f = torch.nn.functional.scaled_dot_product_attention
    assert torch.allclose(f(q, a[None], a[None]), f(q, stacked[:1], stacked[:1]), atol=1e-6)
    with pytest.raises(PapaError):
        stack_conditioning([torch.randn(77, 16), torch.randn(77, 8)])


def test_fresh_lora_is_a_seeded_no_op():
    shapes = {"a.to_q": (32, 16), "b.conv1": (8, 4, 3, 3)}
    s1 = init_lora_state(shapes, LoraConfig(rank=4, init_seed=1))
    s2 = init_lora_state(dict(reversed(list(shapes.items()))), LoraConfig(rank=4, init_seed=1))
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert s1["b.conv1.lora_down.weight"].shape == (4, 4, 3, 3) and s1["b.conv1.lora_up.weight"].shape == (8, 4, 1, 1)
    assert all(not v.any() for k, v in s1.items() if k.endswith("lora_up.weight"))
    assert s1["a.to_q.lora_down.weight"].abs().max() <= 1 / 16 ** 0.5
    assert lora_shapes((32, 16), 2) == ((2, 16), (32, 2))


# --- the text path of Record Preference, on a real session store --------------------------------

@pytest.fixture
def session_dir(tmp_path, isolated_store):
    return tmp_path / "sessions"


def _pending_session(name: str, b: int = 3):
    cfg = LoraConfig(rank=2, alpha=2.0)
    store = state.store()
    s = store.create(name, "fp", cfg, init_lora_state({"m.to_q": (4, 4)}, cfg))
    s.add_round(torch.randn(b, 4, 2, 2), {"c_crossattn": torch.randn(b, 77, 8)}, seeds=[1] * b)
    store.save(s)
    return SessionRef(name, cfg)


def test_record_text_path_persists_feedback_and_bumps_the_version(session_dir):
    ref = _pending_session("rec")
    v0 = state.version("feedback")
    out = papa_nodes.PAPARecordPreference().run(torch.zeros(3, 8, 8, 3), ref, "+ - 0", 60, unique_id="4")
    assert out["result"] == (ref,) and out["ui"]["papa"][0]["likes"] == 1
    assert state.version("feedback") > v0
    state.store().forget("rec")
    assert state.store().get("rec").rounds[0].feedback == [1.0, -1.0, 0.0]  # read back from disk


@pytest.mark.parametrize("images, text, err, match", [
    (3, "+ - + -", FeedbackError, "4 feedback symbols for a batch of 3"),
    (3, "+ ? -", FeedbackError, "unknown feedback symbol"),
    (2, "+ -", PapaError, "2 images came in"),
])
def test_record_text_path_rejects_bad_feedback_and_keeps_the_session(session_dir, images, text, err, match):
    ref = _pending_session("bad")
    before = sorted((p.name, p.read_bytes()) for p in (session_dir / "bad").iterdir())
    with pytest.raises(err, match=match):
        papa_nodes.PAPARecordPreference().run(torch.zeros(images, 8, 8, 3), ref, text, 60, unique_id="4")
    assert sorted((p.name, p.read_bytes()) for p in (session_dir / "bad").iterdir()) == before


def test_session_node_refuses_other_lora_settings_for_an_existing_name(session_dir):
    _pending_session("same")
    with pytest.raises(PapaError, match="exists with other LoRA settings"):
        papa_nodes.PAPASession().run("same", 8, 8.0, "attention", 0)
    with pytest.raises(PapaError, match="invalid session name"):
        papa_nodes.PAPASession().run("../up", 8, 8.0, "attention", 0)
    out = papa_nodes.PAPASession().run("same", 2, 2.0, "attention", 0)
    assert out["ui"]["papa"][0]["rounds"] == 1


def test_export_node_writes_kohya_names_for_sdxl_sessions(session_dir, tmp_path, monkeypatch):
    fp = types.ModuleType("folder_paths")
    fp.get_folder_paths = lambda kind: [str(tmp_path / "loras")]
    monkeypatch.setitem(sys.modules, "folder_paths", fp)
    cfg = LoraConfig(rank=2, alpha=2.0)
    s = state.store().create("xl", "fp", cfg, init_lora_state({"down_blocks.1.attentions.0.to_q": (4, 4)}, cfg),
                             meta={"base_model": "sdxl", "kohya_naming": "ldm",
                                   "ldm_names": {"down_blocks.1.attentions.0.to_q": "input_blocks.4.1.to_q"}})
    out = papa_nodes.PAPAExportLoRA().run(SessionRef("xl", cfg), "mine", "new version", "fp16")
    assert out["result"] == ("mine.safetensors",)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "loras" / "mine.safetensors"), "pt") as f:
        assert sorted(f.keys()) == ["lora_unet_input_blocks_4_1_to_q.alpha", "lora_unet_input_blocks_4_1_to_q.lora_down.weight",
                                    "lora_unet_input_blocks_4_1_to_q.lora_up.weight"]
        assert f.metadata()["ss_base_model_version"] == "sdxl_base_v1-0"
        assert f.get_tensor("lora_unet_input_blocks_4_1_to_q.lora_down.weight").dtype == torch.float16
    assert s.name == "xl"
    with pytest.raises(PapaError, match="not allowed"):
        papa_nodes.PAPAExportLoRA().run(SessionRef("xl", cfg), "../../x", "new version", "fp32")


def test_example_workflow_matches_the_node_declarations(fake_comfy):
    """example_workflows/papa_loop.json is what tools/make_example_workflow.py writes from INPUT_TYPES."""
    from pathlib import Path

    from tools import make_example_workflow as mod

    root = Path(__file__).resolve().parents[1]
    on_disk = json.loads((root / "example_workflows" / "papa_loop.json").read_text(encoding="utf-8"))
    assert on_disk == json.loads(json.dumps(mod.build())), "regenerate: python -m tools.make_example_workflow"
    links = {l[0]: l for l in on_disk["links"]}
    for node in on_disk["nodes"]:
        for i in node["inputs"]:
            if i["link"] is not None:
                assert links[i["link"]][3] == node["id"]
