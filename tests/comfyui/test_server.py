"""The pack in a real ComfyUI server (COMFYUI_DIR), driven over HTTP with API-format workflows."""
from __future__ import annotations

import time

import numpy as np
import pytest

from papa_testkit import graphs
from papa_testkit.comfy import cached_nodes, error_message

PAPA_NODES = ("PAPA_Session", "PAPA_GenerateBatch", "PAPA_RecordPreference", "PAPA_Update", "PAPA_ExportLoRA",
              "PAPA_SessionAction")


def images_of(comfy, entry, node):
    return [comfy.image(i) for i in entry["outputs"][node]["images"]]


def latent_of(comfy, entry, node):
    from safetensors.torch import load_file

    [info] = entry["outputs"][node]["latents"]
    return load_file(str(comfy.base / "output" / info["subfolder"] / info["filename"]))["latent_tensor"]


def session_summary(comfy, name):
    status, r = comfy.get(f"/papa/v1/session?name={name}")
    assert status == 200, r
    return r


def test_nodes_registered_with_tooltips(comfy):
    status, info = comfy.get("/object_info")
    assert status == 200
    for node in PAPA_NODES:
        assert node in info, f"{node} missing from /object_info"
        d = info[node]
        assert d["category"] == "PAPA" and d["description"]
        for section in ("required", "optional"):
            for name, spec in d["input"].get(section, {}).items():
                assert len(spec) > 1 and spec[1].get("tooltip"), f"{node}.{name} has no tooltip"
    log = comfy.log.read_text()
    pack_lines = [line for line in log.splitlines() if "ComfyUI-PAPA" in line]
    assert pack_lines and not any("IMPORT FAILED" in line or "Cannot import" in line for line in pack_lines), log[-3000:]
    # the routes answer under both prefixes
    assert comfy.get("/papa/v1/protocol")[0] == 200 and comfy.get("/api/papa/v1/protocol")[0] == 200
    # the node-info panel's help pages are served where the frontend looks for them
    for node in PAPA_NODES:
        status, page = comfy.get(f"/extensions/ComfyUI-PAPA/docs/{node}.md")
        assert status == 200 and page.startswith(b"# "), node


def test_loop_twice_non_destructive_and_exported_lora_reproduces(comfy):
    before = comfy.run(graphs.native("native_before"))
    assert before["status"]["status_str"] == "success", error_message(before)
    native_before = images_of(comfy, before, "save")

    runs = []
    for i in range(2):
        e = comfy.run(graphs.loop("loop1", feedback="+ -", filename="papa_loop"))
        assert e["status"]["status_str"] == "success", error_message(e)
        runs.append(e)
        gen1, gen2 = images_of(comfy, e, "save1"), images_of(comfy, e, "save2")
        assert len(gen1) == len(gen2) == 2
        assert any(np.abs(a - b).max() > 0 for a, b in zip(gen1, gen2)), "the update did not change the images"
    # run 2 started from the LoRA run 1 trained: its first batch differs from run 1's
    first = [images_of(comfy, r, "save1") for r in runs]
    assert any(np.abs(a - b).max() > 0 for a, b in zip(*first))
    s = session_summary(comfy, "loop1")["summary"]
    assert s["updates"] == 2 and s["likes"] == 2 and s["dislikes"] == 2 and s["pending_round"] is not None
    exported = [r["outputs"]["exp"]["text"][0] for r in runs]
    assert exported == ["papa_loop.safetensors", "papa_loop_2.safetensors"]
    assert (comfy.base / "models" / "loras" / exported[1]).exists()

    # non-destructive: the host's MODEL gives bit-identical images after the updates (recomputed, not cached)
    assert comfy.post("/free", {"free_memory": True, "unload_models": True})[0] == 200
    after = comfy.run(graphs.native("native_after"))
    assert after["status"]["status_str"] == "success", error_message(after)
    assert "ks" not in cached_nodes(after)
    for a, b in zip(native_before, images_of(comfy, after, "save")):
        assert np.array_equal(a, b)

    # fidelity: LoraLoaderModelOnly + KSampler with the export = PAPA Generate Batch after the same update
    fid = comfy.run(graphs.native("native_lora", lora=exported[1]))
    assert fid["status"]["status_str"] == "success", error_message(fid)
    assert "lora key not loaded" not in comfy.log.read_text()
    papa = images_of(comfy, runs[1], "save2")
    native = images_of(comfy, fid, "save")
    worst = max(int(np.abs(a - b).max()) for a, b in zip(papa, native))
    print(f"fidelity: max abs pixel difference {worst}/255")
    assert worst == 0, f"exported LoRA differs from PAPA's own images by {worst}/255"
    # the latents too, byte for byte: PAPA samples through ComfyUI's own LoRA patching
    assert latent_of(comfy, runs[1], "lat2").numpy().tobytes() == latent_of(comfy, fid, "slat").numpy().tobytes()
    assert any(np.abs(a - b).max() > 0 for a, b in zip(native, native_before))


@pytest.mark.parametrize("case, expect", [
    ("count", "3 feedback symbols for a batch of 2"),
    ("symbol", "unknown feedback symbol 'x'"),
    ("filename", "is not allowed"),
    ("flow_model", "not supported yet"),
    ("lcm_model", "not supported yet"),
])
def test_bad_input_gives_node_error_and_server_keeps_serving(comfy, case, expect):
    if case == "count":
        g = graphs.loop("bad_count", feedback="+ - +")
    elif case == "symbol":
        g = graphs.loop("bad_symbol", feedback="+ x")
    elif case == "filename":
        g = graphs.loop("bad_file", filename="../../evil")
    else:
        g = graphs.loop("bad_model")
        g["patch"] = ({"class_type": "ModelSamplingSD3", "inputs": {"model": ["ckpt", 0], "shift": 3.0}}
                      if case == "flow_model" else
                      {"class_type": "ModelSamplingDiscrete", "inputs": {"model": ["ckpt", 0], "sampling": "lcm",
                                                                         "zsnr": False}})
        g["gen1"]["inputs"]["model"] = ["patch", 0]
    e = comfy.run(g)
    assert e["status"]["status_str"] == "error"
    msg = error_message(e)
    assert expect in msg, msg
    assert comfy.get("/object_info/PAPA_Session")[0] == 200
    assert not list((comfy.base / "models" / "loras").glob("*evil*"))
    assert not (comfy.base.parent / "evil.safetensors").exists()


def _wait_graph(name, feedback="", timeout_s=60, seed=42):
    g = graphs.base()
    g.update({"sess": graphs.session(name), "gen1": graphs.generate(["ckpt", 0], ["sess", 0], seed=seed),
              "rec": graphs.record(["gen1", 0], ["sess", 0], feedback, timeout_s=timeout_s),
              "upd": graphs.update(["ckpt", 0], ["rec", 0]),
              "exp": graphs.export(["upd", 2], f"{name}_wait")})
    return g


def _queue_waiting(comfy, name, timeout_s=60):
    pid = comfy.queue(_wait_graph(name, timeout_s=timeout_s))
    t0 = time.time()
    while time.time() - t0 < 300:
        status, r = comfy.get(f"/papa/v1/session?name={name}")
        if status == 200 and r["waiting"]:
            return pid, r["waiting"][0]
        time.sleep(0.3)
    raise TimeoutError("the Record node never started waiting")


def test_a_timed_out_batch_is_answered_by_text_without_a_new_batch(comfy):
    """Headless, as the issue replayed it: the wait times out; the same graph is queued again with the
    answer typed in and Generate's seed moved (the UI's randomize control). The answer lands on the
    batch that was shown: same seeds, same content hash, no second round."""
    e = comfy.run(_wait_graph("late1", timeout_s=5, seed=42))
    assert e["status"]["status_str"] == "error" and "no answer within 5 s" in error_message(e)
    first = session_summary(comfy, "late1")["rounds"]
    e = comfy.run(_wait_graph("late1", feedback="+ -", seed=4242))
    assert e["status"]["status_str"] == "success", error_message(e)
    r = session_summary(comfy, "late1")
    assert len(r["rounds"]) == 1 and r["rounds"][0]["seeds"] == first[0]["seeds"] == [42, 42]
    assert r["rounds"][0]["batch"] == first[0]["batch"] and r["rounds"][0]["feedback"] == [1.0, -1.0]
    assert r["summary"]["updates"] == 1


def test_browser_path_answer_cancel_timeout_interrupt(comfy):
    # answer: the waiting node records exactly what the route delivers, then the update runs
    pid, w = _queue_waiting(comfy, "wait1")
    t0 = time.perf_counter()
    assert comfy.get("/object_info/PAPA_Update")[0] == 200  # the server answers while the node waits
    assert time.perf_counter() - t0 < 5
    bad = comfy.post("/papa/v1/feedback", {"protocol": 1, "session": "wait1", "node_id": w["node_id"],
                                           "prompt_id": pid, "round": w["round"], "feedback": [1]})
    assert bad[0] == 409  # wrong count: the node keeps waiting
    ok = comfy.post("/papa/v1/feedback", {"protocol": 1, "session": "wait1", "node_id": w["node_id"],
                                          "prompt_id": pid, "round": w["round"], "feedback": [1, -1]})
    assert ok[0] == 200 and ok[1]["delivered_to"] == "waiting node"
    e = comfy.wait(pid)
    assert e["status"]["status_str"] == "success", error_message(e)
    s = session_summary(comfy, "wait1")["summary"]
    assert (s["likes"], s["dislikes"], s["updates"]) == (1, 1, 1)

    # cancel: the prompt ends as interrupted, nothing recorded, the batch dropped
    pid, w = _queue_waiting(comfy, "wait2")
    assert comfy.post("/papa/v1/cancel", {"protocol": 1, "session": "wait2", "node_id": w["node_id"],
                                          "prompt_id": pid})[0] == 200
    e = comfy.wait(pid)
    assert e["status"]["status_str"] == "error"
    assert any(k == "execution_interrupted" for k, _ in e["status"]["messages"])
    s = session_summary(comfy, "wait2")
    assert s["summary"]["labelled_rounds"] == 0 and s["summary"]["rounds"] == 0 and not s["waiting"]

    # timeout: a node error that says what to do; the batch stays pending and answerable
    pid, w = _queue_waiting(comfy, "wait3", timeout_s=5)
    e = comfy.wait(pid)
    assert e["status"]["status_str"] == "error" and "no answer within 5 s" in error_message(e)
    first = session_summary(comfy, "wait3")
    assert first["summary"]["pending_round"] == {"round": 0, "batch_size": 2}
    [req] = [r for r in comfy.get("/papa/v1/waiting")[1]["waiting"] if r["session"] == "wait3"]
    assert req["state"] == "timed_out" and req["batch"] == first["rounds"][0]["batch"]

    # ComfyUI's interrupt ends the wait
    pid, w = _queue_waiting(comfy, "wait4")
    assert comfy.post("/interrupt", {})[0] == 200
    e = comfy.wait(pid)
    assert any(k == "execution_interrupted" for k, _ in e["status"]["messages"])
    assert not session_summary(comfy, "wait4")["waiting"]


@pytest.mark.parametrize("path, body, raw, status", [
    ("/papa/v1/feedback", None, b"{not json", 400),
    ("/papa/v1/feedback", {"protocol": 99, "session": "x", "round": 0, "feedback": [1]}, None, 400),
    ("/papa/v1/feedback", {"protocol": 1, "session": "../etc", "round": 0, "feedback": [1]}, None, 400),
    ("/papa/v1/feedback", {"protocol": 1, "session": "nobody", "round": 0, "feedback": [1]}, None, 404),
    ("/papa/v1/feedback", {"protocol": 1, "session": "x", "round": 0, "feedback": [2]}, None, 400),
    ("/papa/v1/feedback", None, b"x" * 70000, 400),
    ("/papa/v1/cancel", {"protocol": 1, "session": "nobody"}, None, 409),
    ("/papa/v1/action", {"protocol": 1, "session": "nobody", "action": "undo"}, None, 404),
    ("/papa/v1/action", {"protocol": 1, "session": "x", "action": "rm -rf"}, None, 400),
])
def test_route_rejects_bad_posts(comfy, path, body, raw, status):
    got, r = comfy.post(path, body, raw)
    assert got == status, r
    assert r["ok"] is False and r["error"]
    assert comfy.get("/papa/v1/protocol")[0] == 200


def test_undo_through_route_and_node(comfy):
    e = comfy.run(graphs.loop("undo1", filename="undo1"))
    assert e["status"]["status_str"] == "success", error_message(e)
    assert session_summary(comfy, "undo1")["summary"]["updates"] == 1
    status, r = comfy.post("/papa/v1/action", {"protocol": 1, "session": "undo1", "action": "undo"})
    assert status == 200 and r["summary"]["updates"] == 0 and r["summary"]["untrained_rounds"] == 1
    g = graphs.base()
    g.update({"sess": graphs.session("undo1"),
              "act": {"class_type": "PAPA_SessionAction", "inputs": {"session": ["sess", 0], "action": "reset"}}})
    e = comfy.run(g)
    assert e["status"]["status_str"] == "success", error_message(e)
    s = session_summary(comfy, "undo1")["summary"]
    assert s["rounds"] == 0 and s["updates"] == 0


def test_example_workflow_runs_the_loop(comfy):
    """example_workflows/papa_loop.json, converted as the frontend does, runs with text feedback."""
    import json
    from pathlib import Path

    from papa_testkit.ui_to_api import to_api

    wf = json.loads((Path(__file__).resolve().parents[2] / "example_workflows" / "papa_loop.json").read_text())
    for node in wf["nodes"]:
        node["mode"] = 0  # unmute Export
    status, info = comfy.get("/object_info")
    api = to_api(wf, info)
    kinds = {n["class_type"]: k for k, n in api.items()}
    api[kinds["CheckpointLoaderSimple"]]["inputs"]["ckpt_name"] = graphs.CKPT
    gen = api[kinds["PAPA_GenerateBatch"]]["inputs"]
    gen.update(width=graphs.SIZE, height=graphs.SIZE, steps=graphs.STEPS, batch_size=2)
    api[kinds["PAPA_RecordPreference"]]["inputs"]["feedback"] = "+ -"
    api[kinds["PAPA_Update"]]["inputs"].update(steps=2, timesteps_per_image=4)
    e = comfy.run(api)
    assert e["status"]["status_str"] == "success", error_message(e)
    name = wf["nodes"][3]["widgets_values"][0]
    assert session_summary(comfy, name)["summary"]["updates"] == 1
    assert e["outputs"][kinds["PAPA_ExportLoRA"]]["text"] == ["my_style.safetensors"]


def test_update_reruns_exactly_when_new_feedback_arrived(comfy):
    """PAPA Update is served from the cache until feedback arrives (here through the route, between runs)."""
    g_upd = graphs.base()
    g_upd.update({"sess": graphs.session("cache1"), "upd": graphs.update(["ckpt", 0], ["sess", 0]),
                  "exp": graphs.export(["upd", 2], "cache1", if_exists="overwrite")})
    g_gen = graphs.base()
    g_gen.update({"sess": graphs.session("cache1"), "gen1": graphs.generate(["ckpt", 0], ["sess", 0]),
                  "save1": graphs.save(["gen1", 0], "cache1")})
    e = comfy.run(g_gen)  # creates the session and a pending round
    assert e["status"]["status_str"] == "success", error_message(e)
    first = comfy.run(g_upd)
    assert first["status"]["status_str"] == "success", error_message(first)
    again = comfy.run(g_upd)
    assert {"upd", "exp"} <= set(cached_nodes(again))
    status, r = comfy.post("/papa/v1/feedback", {"protocol": 1, "session": "cache1", "round": 0, "feedback": [1, -1]})
    assert status == 200 and r["delivered_to"] == "session"
    after = comfy.run(g_upd)
    assert after["status"]["status_str"] == "success", error_message(after)
    assert "upd" not in cached_nodes(after) and "exp" not in cached_nodes(after)
    assert session_summary(comfy, "cache1")["summary"]["updates"] == 1


def test_a_pool_of_candidates_records_only_the_images_shown(comfy):
    """Generate Batch with a pool: 6 candidates sampled, the 2 that ``diverse`` picks are shown, recorded and
    answered; the node reports what the pool cost. The shown images are the pool's own (same seed, batch
    index), not a re-sample."""
    g = graphs.base()
    g.update({"sess": graphs.session("pool1"),
              "gen": graphs.generate(["ckpt", 0], ["sess", 0], seed=5, batch=2),
              "rec": graphs.record(["gen", 0], ["sess", 0], "+ -"),
              "lat": graphs.save_latent(["gen", 1], "pool1")})
    g["gen"]["inputs"].update(pool_size=6, selection="diverse")
    e = comfy.run(g)
    assert e["status"]["status_str"] == "success", error_message(e)
    [info] = e["outputs"]["gen"]["papa"]
    assert (info["shown"], info["candidates"]) == (2, 6) and info["sample_seconds"] > 0
    shown = latent_of(comfy, e, "lat")
    assert shown.shape[0] == 2
    s = session_summary(comfy, "pool1")
    assert s["summary"]["likes"] == 1 and s["summary"]["dislikes"] == 1
    # the same 6 candidates without a pool: the shown two are among them, bit for bit
    g2 = graphs.base()
    g2.update({"sess": graphs.session("pool2"), "gen": graphs.generate(["ckpt", 0], ["sess", 0], seed=5, batch=6),
               "rec": graphs.record(["gen", 0], ["sess", 0], "0 0 0 0 0 0"), "lat": graphs.save_latent(["gen", 1], "pool2")})
    e2 = comfy.run(g2)
    assert e2["status"]["status_str"] == "success", error_message(e2)
    pool = latent_of(comfy, e2, "lat")
    assert all(any(bool((x == p).all()) for p in pool) for x in shown)
