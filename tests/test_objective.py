"""The objective against a direct transcription of the reference formula, and its variants."""
import math

import pytest
import torch

from papa_core.denoiser import DiffusersDenoiser
from papa_core.errors import FeedbackError, NonFiniteError, PapaError
from papa_core.gradients import accumulate_gradients
from papa_core.lora import LoraConfig
from papa_core.objective import ObjectiveConfig, objective_preset

from papa_testkit.models import randomize_lora, tiny_unet2d


def _grads(d):
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in d.lora_parameters()]


def _zero(d):
    for p in d.lora_parameters():
        p.grad = None


def reference_transcription(d, im, label, noise, pref_coef=0.1, model_coef=0.009):
    """tools/train_papa.py's inner loop for one image (batch_size 1, world_size 1), written out.

    Same ε for every t; t ascending over all T; the ELBO weight uses ᾱ[t-1] except at t = 0, where
    we use the project's decoder weight instead of the reference's wraparound (documented choice).
    """
    s = d.schedule
    a_bar, alphas = s.alphas_cumprod, s.alphas
    summed = torch.zeros(1)
    for i in range(s.num_timesteps):
        t = torch.full((1,), i)
        noisy = s.add_noise(im, noise, t)
        pred = d.eps(noisy, t, {}, lora=True)
        err = torch.nn.functional.mse_loss(pred, noise, reduction="none").mean(dim=[1, 2, 3])
        if i == 0:
            scale = 1.0 / alphas[0]
        else:
            scale = (1.0 - alphas[i]) / (alphas[i] * (1.0 - a_bar[i - 1]))
        summed = summed + float(scale) * err
    if model_coef > 0 and label == 1.0:
        with torch.no_grad():
            base = d.eps(noisy, t, {}, lora=False)
        model_loss = torch.nn.functional.mse_loss(pred, base)
    else:
        model_loss = 0.0
    return ((label * summed * pref_coef) + (model_loss * model_coef)).mean()


@pytest.mark.parametrize("label", [1.0, -1.0])
def test_reference_preset_equals_transcription(tiny_denoiser, label):
    d = tiny_denoiser
    randomize_lora(d, scale=0.05)
    g = torch.Generator().manual_seed(7)
    im = torch.randn(1, 1, 8, 8, generator=g).clamp(-1, 1)
    cfg = objective_preset("reference", max_batch=17)  # odd chunking on purpose
    gen = torch.Generator().manual_seed(3)
    _zero(d)
    res = accumulate_gradients(d, im, {}, torch.tensor([label]), cfg, generator=gen)
    ours = _grads(d)
    # The objective draws its shared noise after the (deterministic) exact draw: replay the generator.
    noise = torch.randn((1, 1, 8, 8), generator=torch.Generator().manual_seed(3))
    _zero(d)
    ref = reference_transcription(d, im, label, noise)
    ref.backward()
    theirs = _grads(d)
    assert abs(res.loss - ref.item()) < 1e-5 * max(1.0, abs(ref.item()))
    for a, b in zip(ours, theirs):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)
    assert res.timesteps == d.schedule.num_timesteps


def _direct_anchored_loss(d, x0, y, cfg, seed):
    """softplus(β·y·Δ)/β written with autograd, for the single-chunk draw of the same seed."""
    from papa_core import estimators

    gen = torch.Generator().manual_seed(seed)
    w = d.schedule.elbo_weights()
    draws = [estimators.draw(cfg.estimator, w, cfg.k, cfg.timesteps_per_image, gen) for _ in range(len(x0))]
    noise = torch.randn(x0.shape, generator=gen)
    total = 0.0
    for i, dr in enumerate(draws):
        xt = d.schedule.add_noise(x0[i:i + 1].expand(len(dr.t), -1, -1, -1), noise[i:i + 1].expand(len(dr.t), -1, -1, -1), dr.t)
        e = noise[i:i + 1].expand(len(dr.t), -1, -1, -1)
        g_th = (d.eps(xt, dr.t, {}, lora=True) - e).pow(2).flatten(1).mean(1)
        with torch.no_grad():
            g_b = (d.eps(xt, dr.t, {}, lora=False) - e).pow(2).flatten(1).mean(1)
        delta = (dr.coef.float() * (g_th - g_b)).sum()
        total = total + cfg.pref_coef * torch.nn.functional.softplus(cfg.beta * y[i] * delta) / cfg.beta
    return total / len(x0)


def test_anchored_gradient_is_gradient_of_its_value(tiny_denoiser):
    d = tiny_denoiser
    randomize_lora(d, scale=0.05)
    x0 = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1)).clamp(-1, 1)
    y = torch.tensor([1.0, -1.0, -0.5])
    cfg = ObjectiveConfig(loss="anchored", anchored_on="both", beta=5.0, model_term="none", pref_coef=1.0,
                          estimator="importance_stratified", timesteps_per_image=8)
    _zero(d)
    res = accumulate_gradients(d, x0, {}, y, cfg, generator=torch.Generator().manual_seed(11))
    ours = _grads(d)
    _zero(d)
    direct = _direct_anchored_loss(d, x0, y, cfg, seed=11)
    direct.backward()
    assert abs(res.loss - direct.item()) < 1e-5
    for a, b in zip(ours, _grads(d)):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-7)
    assert res.forward_passes == 2 * res.timesteps  # θ* without gradient, θ with
    # Chunked evaluation gives the same gradient and value as one pass: images split over chunks
    # (max_batch 5 < m = 8) need an extra θ pass; whole images per chunk (max_batch 10, 16) do not.
    for max_batch, passes in ((5, 3), (10, 2), (16, 2)):
        _zero(d)
        r = accumulate_gradients(d, x0, {}, y, ObjectiveConfig(**{**cfg.to_dict(), "max_batch": max_batch}),
                                 generator=torch.Generator().manual_seed(11))
        assert r.forward_passes == passes * r.timesteps, max_batch
        # float32 sums in another order (one thread: ~1e-5 relative); a chunk left out would be O(1)
        assert math.isclose(r.loss, res.loss, rel_tol=1e-4) and all(
            math.isclose(u, v, rel_tol=1e-4, abs_tol=1e-7) for u, v in zip(r.delta, res.delta))
        for a, b in zip(ours, _grads(d)):
            assert torch.allclose(a, b, rtol=1e-3, atol=1e-6), max_batch


def test_neutral_gives_no_gradient_and_grades_scale(tiny_denoiser):
    d = tiny_denoiser
    randomize_lora(d)
    x0 = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(2)).clamp(-1, 1)
    cfg = ObjectiveConfig(loss="linear", model_term="none", estimator="uniform", timesteps_per_image=4)
    _zero(d)
    res = accumulate_gradients(d, x0, {}, torch.tensor([0.0, 0.0]), cfg, generator=torch.Generator().manual_seed(0))
    assert res.timesteps == 0 and all(p.grad is None for p in d.lora_parameters())
    _zero(d)
    accumulate_gradients(d, x0[:1], {}, torch.tensor([1.0]), cfg, generator=torch.Generator().manual_seed(0))
    full = _grads(d)
    _zero(d)
    accumulate_gradients(d, x0[:1], {}, torch.tensor([0.5]), cfg, generator=torch.Generator().manual_seed(0))
    for a, b in zip(full, _grads(d)):
        assert torch.allclose(0.5 * a, b, rtol=1e-5, atol=1e-9)


def test_positive_only_ignores_dislikes(tiny_denoiser):
    d = tiny_denoiser
    x0 = torch.randn(1, 1, 8, 8)
    cfg = ObjectiveConfig(positive_only=True, model_term="none", estimator="uniform", timesteps_per_image=2)
    _zero(d)
    res = accumulate_gradients(d, x0, {}, torch.tensor([-1.0]), cfg)
    assert res.timesteps == 0


def test_epapa_trains_only_high_t(tiny_denoiser):
    d = tiny_denoiser
    cfg = ObjectiveConfig(estimator="exact", k=30, model_term="none")
    res = accumulate_gradients(d, torch.randn(1, 1, 8, 8), {}, torch.tensor([1.0]), cfg)
    assert res.timesteps == d.schedule.num_timesteps - 30


def test_below_k_pairs_carry_the_similarity_term_alone(tiny_denoiser):
    """Below k only ‖ε_θ − ε_θ*‖² is trained, on every image: the preference (value, Δ) is the same with
    or without those pairs, and a disliked image with the term on liked images still gets it below k."""
    d = tiny_denoiser
    randomize_lora(d, scale=0.05)
    x0 = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(3)).clamp(-1, 1)
    noise = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    cfg = ObjectiveConfig(loss="anchored", anchored_on="both", k=30, model_term="per_timestep",
                          model_term_on="liked", model_coef=0.5, timesteps_per_image=4)
    low = ObjectiveConfig(**{**cfg.to_dict(), "below_k_timesteps": 3})
    for y in (1.0, -1.0):
        a = accumulate_gradients(d, x0, {}, torch.tensor([y]), cfg, torch.Generator().manual_seed(7), noise=noise)
        b = accumulate_gradients(d, x0, {}, torch.tensor([y]), low, torch.Generator().manual_seed(7), noise=noise)
        assert (a.timesteps, b.timesteps) == (4, 7)
        assert a.pref_loss == b.pref_loss and a.delta == b.delta
        assert b.model_loss > a.model_loss  # the pairs below k add to it, for a dislike too
        assert (a.model_loss > 0) == (y > 0)
    # Without k nothing lies below it: the setting changes nothing.
    k0 = [ObjectiveConfig(**{**c.to_dict(), "k": 0}) for c in (cfg, low)]
    r0, r1 = (accumulate_gradients(d, x0, {}, torch.tensor([1.0]), c, torch.Generator().manual_seed(7), noise=noise)
              for c in k0)
    assert r0.timesteps == r1.timesteps == 4 and r0.loss == r1.loss


def test_below_k_term_holds_the_lora_to_the_base_there(tiny_denoiser):
    """Steps on the term below k alone shrink the LoRA's change of ε̂ at t < k (what EPAPA's sampler, which
    uses θ* there, would give); no LoRA file can switch itself off below k."""
    d = tiny_denoiser
    randomize_lora(d, scale=0.1)
    x0 = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(5)).clamp(-1, 1)
    probe_t = torch.arange(0, 30, 3)
    noise = torch.randn(len(probe_t), 1, 8, 8, generator=torch.Generator().manual_seed(6))

    def change_below_k() -> float:
        with torch.no_grad():
            x_t = d.schedule.add_noise(x0[:1].expand(len(probe_t), -1, -1, -1), noise, probe_t)
            on, off = d.eps(x_t, probe_t, {}, lora=True), d.eps(x_t, probe_t, {}, lora=False)
        return float((on - off).norm() / off.norm())

    cfg = ObjectiveConfig(k=30, pref_coef=0.0, model_term="none", model_coef=1.0, below_k_timesteps=4)
    opt = torch.optim.Adam(d.lora_parameters(), lr=1e-2)
    before = change_below_k()
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        opt.zero_grad()
        accumulate_gradients(d, x0, {}, torch.tensor([1.0, -1.0, 1.0, -1.0]), cfg, g)
        opt.step()
    assert change_below_k() < 0.5 * before


def test_dpo_pushes_liked_over_disliked(tiny_denoiser):
    d = tiny_denoiser
    x0 = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(5)).clamp(-1, 1)
    cfg = objective_preset("dpo", timesteps_per_image=8)
    res = accumulate_gradients(d, x0, {}, torch.tensor([1.0, -1.0]), cfg, generator=torch.Generator().manual_seed(0))
    # At θ = θ*, Δ = 0 for both, so the loss is softplus(0)/β.
    assert abs(res.loss - float(torch.log(torch.tensor(2.0))) / cfg.beta) < 1e-6


def test_dpo_chunked_equals_one_pass(tiny_denoiser):
    # DPO couples images, so even whole-image chunks need the θ errors of every image first.
    d = tiny_denoiser
    randomize_lora(d, scale=0.05)
    x0 = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(6)).clamp(-1, 1)
    y = torch.tensor([1.0, -1.0, 1.0, -1.0])
    cfg = objective_preset("dpo", timesteps_per_image=4, beta=50.0)
    _zero(d)
    one = accumulate_gradients(d, x0, {}, y, cfg, generator=torch.Generator().manual_seed(2))
    g1 = _grads(d)
    _zero(d)
    two = accumulate_gradients(d, x0, {}, y, ObjectiveConfig(**{**cfg.to_dict(), "max_batch": 8}),
                               generator=torch.Generator().manual_seed(2))
    assert two.forward_passes == 3 * two.timesteps and one.forward_passes == 2 * one.timesteps
    assert abs(one.loss - two.loss) < 1e-6
    for a, b in zip(g1, _grads(d)):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-7)


def test_bad_input_errors(tiny_denoiser):
    d = tiny_denoiser
    cfg = ObjectiveConfig(estimator="uniform", timesteps_per_image=2)
    with pytest.raises(FeedbackError, match="2 feedback values for a batch of 3"):
        accumulate_gradients(d, torch.zeros(3, 1, 8, 8), {}, torch.tensor([1.0, -1.0]), cfg)
    bad = torch.zeros(1, 1, 8, 8)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="regenerate"):
        accumulate_gradients(d, bad, {}, torch.tensor([1.0]), cfg)
    with pytest.raises(FeedbackError, match=r"outside \[-1, 1\]"):
        accumulate_gradients(d, torch.zeros(1, 1, 8, 8), {}, torch.tensor([3.0]), cfg)
    with pytest.raises(PapaError, match="loss must be one of"):
        ObjectiveConfig(loss="magic")
    with pytest.raises(PapaError, match="unknown objective preset"):
        objective_preset("nope")


def test_nan_loss_is_reported(small_schedule):
    d = DiffusersDenoiser(tiny_unet2d(), small_schedule, LoraConfig(rank=2, alpha=2.0))
    with torch.no_grad():
        d.lora_parameters()[-1].fill_(float("nan"))
    with pytest.raises(NonFiniteError, match="NaN or inf"):
        accumulate_gradients(d, torch.zeros(1, 1, 8, 8), {}, torch.tensor([1.0]),
                             ObjectiveConfig(estimator="uniform", timesteps_per_image=2, model_term="none"))


def test_liked_weight_scales_only_the_liked_images(tiny_denoiser):
    d = tiny_denoiser
    randomize_lora(d, scale=0.05)
    x0 = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(8)).clamp(-1, 1)
    cfg = ObjectiveConfig(loss="anchored", anchored_on="both", model_term="none", pref_coef=1.0,
                          estimator="importance_stratified", timesteps_per_image=4)

    def grads(y, **kw):
        _zero(d)
        r = accumulate_gradients(d, x0, {}, torch.tensor(y), ObjectiveConfig(**{**cfg.to_dict(), **kw}),
                                 generator=torch.Generator().manual_seed(4))
        return r.loss, _grads(d)

    (l_like, g_like), (l_like3, g_like3) = grads([1.0, 0.0]), grads([1.0, 0.0], liked_weight=3.0)
    assert abs(l_like3 - 3 * l_like) < 1e-6
    for a, b in zip(g_like, g_like3):
        assert torch.allclose(3 * a, b, rtol=1e-3, atol=1e-6)
    (l_dis, g_dis), (l_dis3, g_dis3) = grads([0.0, -1.0]), grads([0.0, -1.0], liked_weight=3.0)
    assert l_dis == l_dis3 and all(torch.equal(a, b) for a, b in zip(g_dis, g_dis3))


def test_settings_written_by_older_versions_still_load():
    """Retired fields (always at one value) are dropped on load; another value is refused, not ignored."""
    from papa_core.update import UpdateConfig

    old = dict(objective_preset("default").to_dict(), t0_weight="decoder", shared_noise=True)
    assert ObjectiveConfig.from_dict(old) == objective_preset("default")
    with pytest.raises(PapaError, match="unknown objective settings"):
        ObjectiveConfig.from_dict(dict(old, shared_noise=False))
    upd = dict(UpdateConfig().to_dict(), weight_decay=0.0, replay_rounds=0, objective=old)
    assert UpdateConfig.from_dict(upd) == UpdateConfig()
    with pytest.raises(PapaError, match="unknown update settings"):
        UpdateConfig.from_dict(dict(upd, replay_rounds=3))
