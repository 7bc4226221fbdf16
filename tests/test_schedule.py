import math

import pytest
import torch

from papa_core.schedule import DiffusionSchedule


def test_elbo_weights_match_hand_computation(schedule):
    betas = [1e-4 + (0.02 - 1e-4) * i / 999 for i in range(1000)]
    a_bar, prod = [], 1.0
    for b in betas:
        prod *= 1 - b
        a_bar.append(prod)
    w = schedule.elbo_weights()
    for t in (1, 2, 10, 500, 999):
        alpha = 1 - betas[t]
        expected = (1 - alpha) / (alpha * (1 - a_bar[t - 1]))
        assert math.isclose(float(w[t]), expected, rel_tol=1e-9)
    # t = 0 from the decoder term with σ_0² = β_0: 1/α_0
    assert math.isclose(float(w[0]), 1 / (1 - betas[0]), rel_tol=1e-12)
    assert 1.15 < float(w[1]) < 1.25  # the figure quoted in the design notes
    assert math.isclose(float(w[100]), 2 / 100, rel_tol=0.15)  # roughly 2/t


def test_reference_wraparound_weight_is_tiny(schedule):
    w_ref = schedule.elbo_weights("reference_wraparound")
    assert float(w_ref[0]) < 2e-4  # the reference's accident: β_0 / (α_0 (1 - ᾱ_{T-1}))
    assert torch.equal(w_ref[1:], schedule.elbo_weights()[1:])


def test_sigmas_round_trip_and_sd_schedule():
    s = DiffusionSchedule.scaled_linear()
    back = DiffusionSchedule.from_sigmas(s.sigmas)
    assert torch.allclose(back.alphas_cumprod, s.alphas_cumprod, rtol=1e-12)
    assert math.isclose(float(s.sigmas[0]), 0.029167, rel_tol=1e-3)  # ComfyUI's sigma_min for SD1.5
    assert math.isclose(float(s.sigmas[999]), 14.6146, rel_tol=1e-3)


def test_from_diffusers_scheduler_matches():
    from diffusers import DDPMScheduler

    sch = DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")
    s = DiffusionSchedule.from_diffusers_scheduler(sch)
    assert torch.allclose(s.alphas_cumprod, DiffusionSchedule.linear().alphas_cumprod, rtol=1e-5)


def test_bad_schedule_rejected():
    with pytest.raises(ValueError, match="decreasing"):
        DiffusionSchedule(torch.tensor([0.5, 0.9]))
    with pytest.raises(ValueError):
        DiffusionSchedule(torch.tensor([float("nan"), 0.5]))
