"""The PAPA loop through Forge's own API: /sdapi/v1/txt2img with the extension's alwayson_scripts
arguments — generate → feedback + update → generate → export → the exported LoRA as ``<lora:…:1>``
reproduces the session's images → bad input is refused before anything is sampled."""
from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

SETTINGS = {"prompt": "a cat", "steps": 4, "width": 128, "height": 128, "batch_size": 3, "seed": 7,
            "sampler_name": "Euler", "scheduler": "Automatic", "cfg_scale": 5}


def txt2img(forge, papa=None, **changes):
    body = dict(SETTINGS, **changes)
    if papa is not None:
        body["alwayson_scripts"] = {"PAPA": {"args": list(papa)}}
    status, reply = forge.post("/sdapi/v1/txt2img", body)
    assert status == 200, reply
    images = [np.asarray(Image.open(io.BytesIO(base64.b64decode(b)))).astype(int) for b in reply["images"]]
    return images, json.loads(reply["info"])["extra_generation_params"]


def max_diff(a, b) -> int:
    assert len(a) == len(b) > 0
    return max(int(np.abs(x - y).max()) for x, y in zip(a, b))


def session_index(forge, name: str) -> dict:
    return json.loads((forge.sessions / name / "session.json").read_text())


def test_generate_feedback_update_export_and_the_file_reproduces_the_session(forge):
    base, _ = txt2img(forge)
    first, params = txt2img(forge, [True, "api"])
    assert params["PAPA"].startswith("api round 0 batch ")
    assert max_diff(first, base) == 0, "a new session's LoRA is zero: the images are the base model's"

    tuned, params = txt2img(forge, [True, "api", "+ - +", True, "strong", ""])
    assert params["PAPA"].startswith("api round 1 ")
    assert max_diff(tuned, base) > 0, "the update changed nothing"
    index = session_index(forge, "api")
    feedback = [r["feedback"] for r in index["rounds"]]
    assert feedback[0] == [1.0, -1.0, 1.0] and feedback[1] is None
    update = index["rounds"][0]["update"]  # the learning strength held: ρ within ±20 % of its target
    assert update["change_target"] == pytest.approx(0.12) and abs(update["change"] / update["change_target"] - 1) <= 0.2

    again, params = txt2img(forge, [True, "api", "", False, "normal", "api_lora"])
    assert params["PAPA export"] == "api_lora.safetensors"
    assert max_diff(again, tuned) == 0, "the same LoRA at the same seed gives the same images"
    tensors = load_file(forge.loras / "api_lora.safetensors")
    assert tensors and all(k.startswith("lora_unet_") for k in tensors)
    assert any(torch.count_nonzero(v) for k, v in tensors.items() if k.endswith("lora_up.weight"))

    # the exported file through Forge's built-in LoRA support, PAPA off: what the session showed
    by_file, params = txt2img(forge, prompt="a cat <lora:api_lora:1>")
    assert "api_lora" in params.get("Lora hashes", "")
    assert max_diff(by_file, again) <= 2


def test_the_style_preset_waits_for_a_pair_keeps_the_answers_and_steps_by_the_dislikes(forge):
    txt2img(forge, [True, "sty"])
    images, params = txt2img(forge, [True, "sty", "+ + +", True, "normal", "", "style"])
    assert images == [] and "mark at least one image 👎" in params["PAPA error"]
    index = session_index(forge, "sty")
    assert index["rounds"][0]["feedback"] == [1.0, 1.0, 1.0] and index["rounds"][0]["update"] is None  # kept
    txt2img(forge, [True, "sty"])
    images, params = txt2img(forge, [True, "sty", "+ - +", True, "normal", "", "style"])
    assert len(images) == 3 and "PAPA error" not in params
    first, second = (r["update"] for r in session_index(forge, "sty")["rounds"][:2])
    assert first["update_id"] == second["update_id"] and first["objective"] == "dpo"  # one update, both rounds
    # one 👎 in the six answers: d = 1/6, so a third of the normal 6 % (papa_core.trust_region.answered_share)
    assert first["change_target"] == pytest.approx(0.06 / 3)


@pytest.mark.parametrize("args, message", [
    ([True, "api", "+ x +"], "unknown feedback symbol 'x'"),
    ([True, "bad name!"], "invalid session name"),
    ([True, "api", "", False, "huge"], "strength must be one of gentle, normal, strong"),
    ([True, "api", "", False, "normal", "", "dpo"], "preset must be one of default, style"),
    ([True, "nobatch", "+ + +"], "has no batch waiting for an answer: generate one with PAPA enabled first"),
])
def test_bad_input_is_refused_before_sampling_with_what_to_do(forge, args, message):
    images, params = txt2img(forge, args)
    assert images == [] and message in params["PAPA error"]


def test_batch_count_above_one_is_refused(forge):
    images, params = txt2img(forge, [True, "api2"], n_iter=2)
    assert images == [] and "Batch count to 1" in params["PAPA error"]
