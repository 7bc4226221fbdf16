import json

import pytest
import torch

from papa_core import fsio
from papa_core.errors import (FeedbackError, NonFiniteError, PapaError, SessionCorrupt, SessionMismatch, SessionNotFound,
                              StorageError)
from papa_core.lora import LoraConfig, states_equal
from papa_core.session import SessionStore
from papa_core.update import UpdateConfig, update
from papa_core.objective import ObjectiveConfig

FAST = UpdateConfig(objective=ObjectiveConfig(estimator="importance_stratified", timesteps_per_image=4), steps=2,
                    lr=1e-2)


def _new(store, d, name="s"):
    return store.create(name, d.fingerprint, d.lora_config, d.get_lora_state(), meta={"base_model": "tiny"})


def _round(s, n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return s.add_round(torch.randn(n, 1, 8, 8, generator=g).clamp(-1, 1), {}, list(range(n)))


def test_persistence_round_trip(tmp_path, tiny_denoiser):
    store = SessionStore(tmp_path)
    s = _new(store, tiny_denoiser)
    _round(s)
    s.record_feedback([1, -1, 0])
    store.save(s)
    update(s, tiny_denoiser, FAST)
    store.save(s)
    _round(s, seed=1)
    store.save(s)
    fresh = SessionStore(tmp_path).get("s")
    assert fresh.version == s.version and len(fresh.rounds) == 2
    assert states_equal(fresh.lora_state, s.lora_state)
    assert fresh.rounds[0].feedback == [1.0, -1.0, 0.0]
    assert fresh.rounds[0].update["steps"] == 2
    assert torch.equal(fresh.rounds[1].x0, s.rounds[1].x0)
    assert fresh.pending_round is not None
    assert states_equal(fresh.optimizer_state, s.optimizer_state)
    # no stray files: one per blob + session.json
    assert sorted(p.name.split("-v")[0] for p in (tmp_path / "s").glob("*.safetensors")) == \
        ["initial", "lora", "optimizer", "round-0", "round-1"]


def test_undo_is_bitwise_exact(tmp_path, tiny_denoiser):
    store = SessionStore(tmp_path)
    s = _new(store, tiny_denoiser)
    _round(s)
    s.record_feedback([1, -1, 1])
    update(s, tiny_denoiser, FAST)
    lora1, opt1 = dict(s.lora_state), dict(s.optimizer_state)
    _round(s, seed=2)
    s.record_feedback([-1, 1, 1])
    update(s, tiny_denoiser, FAST)
    store.save(s)
    assert not states_equal(s.lora_state, lora1)
    s = SessionStore(tmp_path).get("s")  # undo survives a restart too
    assert s.undo_last_update() == 1
    assert states_equal(s.lora_state, lora1) and states_equal(s.optimizer_state, opt1)
    assert s.untrained_rounds()[0].index == 1
    s.undo_last_update()
    assert states_equal(s.lora_state, s.initial_lora) and s.optimizer_state is None
    with pytest.raises(PapaError, match="no update to undo"):
        s.undo_last_update()


def test_interrupted_write_keeps_previous_state(tmp_path, tiny_denoiser, monkeypatch):
    store = SessionStore(tmp_path)
    s = _new(store, tiny_denoiser)
    _round(s)
    s.record_feedback([1, 1, -1])
    store.save(s)
    before = json.loads((tmp_path / "s" / "session.json").read_text())
    update(s, tiny_denoiser, FAST)

    calls = {"n": 0}
    real = fsio.atomic_write_bytes

    def crash_midway(path, data):
        calls["n"] += 1
        if calls["n"] == 2:  # after the first new tensor file, before the manifest
            with open(str(path) + ".partial", "wb") as f:
                f.write(data[: len(data) // 2])  # a torn write lying around
            raise OSError("simulated power cut")
        return real(path, data)

    monkeypatch.setattr(fsio, "atomic_write_bytes", crash_midway)
    with pytest.raises(StorageError, match="unchanged at its last saved state"):
        store.save(s)
    monkeypatch.undo()
    again = SessionStore(tmp_path).get("s")
    assert again.version == before["version"]
    assert again.rounds[0].update is None and again.rounds[0].feedback == [1.0, 1.0, -1.0]
    assert states_equal(again.lora_state, again.initial_lora)


def test_torn_tensor_file_is_detected(tmp_path, tiny_denoiser):
    store = SessionStore(tmp_path)
    s = _new(store, tiny_denoiser)
    store.save(s)
    lora_file = next((tmp_path / "s").glob("lora-*.safetensors"))
    data = lora_file.read_bytes()
    lora_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(SessionCorrupt, match="checksum"):
        SessionStore(tmp_path).get("s")


def test_mismatch_and_bad_input(tmp_path, tiny_denoiser):
    store = SessionStore(tmp_path)
    s = _new(store, tiny_denoiser)
    with pytest.raises(SessionMismatch, match="rank: 4 vs 8"):
        store.open_or_create("s", tiny_denoiser.fingerprint, LoraConfig(rank=8, alpha=4.0, targets="attention+conv"),
                             {})
    with pytest.raises(SessionMismatch, match="base model fingerprint"):
        s.check_compatible("0" * 16, s.lora_config)
    with pytest.raises(SessionNotFound, match="no session named 'other'"):
        store.get("other")
    with pytest.raises(PapaError, match="invalid session name"):
        store.get("../etc")
    with pytest.raises(PapaError, match="already exists"):
        _new(store, tiny_denoiser)
    with pytest.raises(FeedbackError, match="no batch waiting"):
        s.record_feedback([1])
    _round(s)
    with pytest.raises(FeedbackError, match="2 feedback values for a batch of 3"):
        s.record_feedback([1, -1])
    bad = torch.zeros(2, 1, 8, 8)
    bad[1] = float("inf")
    with pytest.raises(NonFiniteError):
        s.add_round(bad, {}, [0, 1])
    with pytest.raises(PapaError, match="no new feedback"):
        update(s, tiny_denoiser, FAST)
