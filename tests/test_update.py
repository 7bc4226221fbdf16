import pytest
import torch

from papa_core.errors import NonFiniteError, PapaError
from papa_core.lora import states_equal
from papa_core.objective import ObjectiveConfig
from papa_core.session import SessionStore
from papa_core.update import UpdateConfig, update, update_preset



def _session(tmp_path, d, n=4):
    store = SessionStore(tmp_path)
    s = store.create("u", d.fingerprint, d.lora_config, d.get_lora_state())
    s.add_round(torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(0)).clamp(-1, 1), {}, list(range(n)))
    s.record_feedback([1, -1, 1, 0][:n])
    return store, s


def test_update_moves_lora_and_reports(tmp_path, tiny_denoiser):
    _, s = _session(tmp_path, tiny_denoiser)
    seen = []
    cfg = UpdateConfig(objective=ObjectiveConfig(timesteps_per_image=4), steps=3, lr=1e-2)
    st = update(s, tiny_denoiser, cfg, progress=lambda i, n, info: seen.append((i, n, info["loss"])))
    assert [x[:2] for x in seen] == [(1, 3), (2, 3), (3, 3)]
    assert st.images == 3 and st.steps == 3 and st.timesteps == 3 * 3 * 4 and st.seconds > 0
    assert len(st.loss) == 3 and all(g > 0 for g in st.grad_norm)
    assert not states_equal(s.lora_state, s.initial_lora)
    assert states_equal(s.lora_state, tiny_denoiser.get_lora_state())
    assert s.rounds[0].update["update_id"] == 0


def test_replay_uses_earlier_rounds(tmp_path, tiny_denoiser):
    _, s = _session(tmp_path, tiny_denoiser)
    cfg = UpdateConfig(objective=ObjectiveConfig(timesteps_per_image=2), steps=1, replay="all")
    update(s, tiny_denoiser, cfg)
    s.add_round(torch.zeros(2, 1, 8, 8), {}, [7, 8])
    s.record_feedback([1, -1])
    assert update(s, tiny_denoiser, cfg).images == 5
    s.undo_last_update()
    assert update(s, tiny_denoiser, UpdateConfig(objective=cfg.objective, steps=1, replay="none")).images == 2


def test_pairwise_preset_waits_for_a_pair_and_keeps_the_feedback(tmp_path, tiny_denoiser):
    store = SessionStore(tmp_path)
    s = store.create("r", tiny_denoiser.fingerprint, tiny_denoiser.lora_config, tiny_denoiser.get_lora_state())
    s.add_round(torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0)).clamp(-1, 1), {}, [0, 1, 2])
    s.record_feedback([1, 1, 0])
    cfg = update_preset("dpo")
    with pytest.raises(PapaError, match="no disliked one yet: mark at least one image 👎"):
        update(s, tiny_denoiser, cfg)
    assert len(s.untrained_rounds()) == 1 and states_equal(s.lora_state, s.initial_lora)
    s.add_round(torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1)).clamp(-1, 1), {}, [3, 4])
    s.record_feedback([-1, 0])
    st = update(s, tiny_denoiser, cfg)
    assert st.objective == "dpo" and st.images == 3 and st.rounds == [0, 1] and not s.untrained_rounds()
    assert not states_equal(s.lora_state, s.initial_lora)


def test_style_preset_learns_from_pairs_and_steps_a_quarter_on_a_round_liked_throughout(tmp_path, tiny_denoiser):
    """The style preset: pairs (refused until a 👍 and a 👎 exist), the whole target on a round half
    disliked, a quarter of it (after the decay) on a round liked throughout, which still trains on the
    replayed pairs."""
    store = SessionStore(tmp_path)
    s = store.create("s", tiny_denoiser.fingerprint, tiny_denoiser.lora_config, tiny_denoiser.get_lora_state())
    cfg = update_preset("style", objective={"k": 20})  # the toy schedule has 50 steps
    s.add_round(torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0)).clamp(-1, 1), {}, [0, 1, 2, 3])
    s.record_feedback([1, -1, 1, -1])
    first = update(s, tiny_denoiser, cfg)
    s.add_round(torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1)).clamp(-1, 1), {}, [4, 5, 6, 7])
    s.record_feedback([1, 1, 1, 1])
    second = update(s, tiny_denoiser, cfg)
    assert first.objective == second.objective == "dpo" and second.images == 8
    assert first.change_target == pytest.approx(cfg.strength)
    assert second.change_target == pytest.approx(cfg.strength * 20 / 21 * 0.25)
    assert second.change <= second.change_target * 1.1


def test_reference_preset_one_step_per_image(tmp_path, tiny_denoiser):
    _, s = _session(tmp_path, tiny_denoiser, n=2)
    st = update(s, tiny_denoiser, update_preset("reference"))
    assert st.steps == 2 and st.timesteps == 2 * tiny_denoiser.schedule.num_timesteps


def test_nan_guard_restores_weights(tmp_path, tiny_denoiser, monkeypatch):
    _, s = _session(tmp_path, tiny_denoiser)
    before = dict(s.lora_state)
    version = s.version
    import papa_core.update as upd

    real = upd.accumulate_gradients

    def poisoned(*a, **kw):
        res = real(*a, **kw)
        for p in tiny_denoiser.lora_parameters():
            if p.grad is not None:
                p.grad.fill_(float("nan"))
                break
        return res

    monkeypatch.setattr(upd, "accumulate_gradients", poisoned)
    with pytest.raises(NonFiniteError, match="restored"):
        update(s, tiny_denoiser, UpdateConfig(objective=ObjectiveConfig(timesteps_per_image=2), steps=2))
    assert states_equal(tiny_denoiser.get_lora_state(), before)
    assert states_equal(s.lora_state, before) and s.version == version and s.untrained_rounds()


def test_config_validation():
    with pytest.raises(PapaError, match="lr"):
        UpdateConfig(lr=0)
    with pytest.raises(PapaError, match="optimizer"):
        UpdateConfig(optimizer="sgd9")
    with pytest.raises(PapaError, match="unknown update preset"):
        update_preset("fast-please")
    d = UpdateConfig().to_dict()
    assert UpdateConfig.from_dict(d) == UpdateConfig()


def test_step_choices_keep_the_newest_round_in_every_step():
    from papa_core.update import _step_choices

    g = torch.Generator().manual_seed(0)
    it = _step_choices(n=30, n_new=4, per_step=10, shuffle=True, g=g)
    steps = [next(it) for _ in range(9)]
    assert all(len(c) == 10 and set(range(26, 30)) <= set(c) and len(set(c)) == 10 for c in steps)
    # the older items are walked without repeats: 9 steps × 6 = 54 draws cover all 26 twice and more
    olds = [i for c in steps for i in c if i < 26]
    assert set(olds[:26]) == set(range(26))
    # more new items than a step holds: a subset of the new ones only
    it = _step_choices(n=30, n_new=12, per_step=10, shuffle=True, g=g)
    assert all(set(next(it)) <= set(range(18, 30)) for _ in range(2))
    # the old walk (n_new = 0) is unchanged: a permutation per pass
    it = _step_choices(n=12, n_new=0, per_step=4, shuffle=True, g=torch.Generator().manual_seed(1))
    assert sorted(sum((next(it) for _ in range(3)), [])) == list(range(12))


def test_newest_every_step_and_lr_decay(tmp_path, tiny_denoiser):
    _, s = _session(tmp_path, tiny_denoiser)
    cfg = UpdateConfig(objective=ObjectiveConfig(timesteps_per_image=2), steps=2, images_per_step=4, lr=1e-2,
                       newest_every_step=True, lr_decay_rounds=2)
    assert update(s, tiny_denoiser, cfg).lr == pytest.approx(1e-2)
    for k in range(2):
        s.add_round(torch.zeros(2, 1, 8, 8), {}, [7, 8])
        s.record_feedback([1, -1])
        st = update(s, tiny_denoiser, cfg)
    assert st.lr == pytest.approx(1e-2 * 2 / (2 + 2))  # two rounds trained on before this update
    assert st.images == 3 + 2 + 2
    with pytest.raises(PapaError, match="lr_decay_rounds"):
        UpdateConfig(lr_decay_rounds=-1)
    with pytest.raises(PapaError, match="newest_every_step"):
        UpdateConfig(newest_every_step="yes")


def test_auto_autocast_is_bf16_only_where_the_hardware_has_it(monkeypatch):
    from papa_core import update as upd

    cpu = torch.device("cpu")
    for avx512, amx, want in ((True, False, torch.bfloat16), (False, True, torch.bfloat16), (False, False, None)):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512: v, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v, raising=False)
        assert upd.resolve_autocast("auto", cpu) == want
        assert upd.resolve_autocast("none", cpu) is None and upd.resolve_autocast("bf16", cpu) == torch.bfloat16
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    assert upd.resolve_autocast("auto", cpu) is None  # a torch without the probes: fp32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert upd.resolve_autocast("auto", torch.device("cuda")) is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert upd.resolve_autocast("auto", torch.device("cuda")) == torch.bfloat16


def test_bf16_autocast_gradient_agrees_with_fp32(tiny_denoiser):
    # The same draw and noise, fp32 against bf16 autocast: the objective's gradient keeps its direction
    # (Δ is a difference of two errors, so rounding could in principle swamp it).
    from dataclasses import replace

    from papa_testkit.models import randomize_lora
    from papa_core.diagnostics import lora_gradient

    d = tiny_denoiser
    randomize_lora(d, scale=0.05)
    x0 = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0)).clamp(-1, 1)
    y = torch.tensor([1.0, -1.0, 1.0, -1.0])
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    cfg = replace(update_preset("default").objective, k=20)  # the toy schedule has 50 steps
    g32, g16 = (lora_gradient(d, x0, {}, y, cfg, noise, torch.Generator().manual_seed(2), dt)
                for dt in (None, torch.bfloat16))
    assert g32.norm() > 0
    assert torch.nn.functional.cosine_similarity(g32, g16, dim=0) > 0.99  # 0.9999 seen
    assert not torch.equal(g32, g16)  # autocast really ran in bf16
