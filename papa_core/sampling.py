"""Generation from an ε-predictor: strided DDIM / ancestral sampling with EPAPA's switch.

The reference samples with 1000 ancestral DDPM steps; a product cannot afford that on every
round, so we use the DDIM update (Song et al. 2021, eq. 12) over an evenly strided subsequence
of the training timesteps. eta = 1 is ancestral sampling on that subsequence (it equals DDPM's
sampler when every step is used), eta = 0 deterministic DDIM.

EPAPA (paper, and the reference's ``epapa_k``): the pretrained model denoises the last k steps
(t < k) and the fine-tuned one the rest; pass ``eps_fn_low`` for that. No LoRA file can switch itself
off below k, so every host applies it at every step, and the digits loop does too unless asked for
the paper's sampler (``LoopConfig.base_below_k``); the default holds its LoRA to θ* there instead
(``ObjectiveConfig.below_k_timesteps``).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from .schedule import DiffusionSchedule

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""eps_fn(x_t [B,...], t long [B]) -> ε̂ [B,...]"""


def strided_timesteps(num_train_timesteps: int, num_steps: int) -> torch.Tensor:
    """Descending long tensor of ``num_steps`` timesteps, always ending at t = 0."""
    if not 1 <= num_steps <= num_train_timesteps:
        raise ValueError(f"num_steps must be in [1, {num_train_timesteps}], got {num_steps}")
    ts = torch.linspace(0, num_train_timesteps - 1, num_steps, dtype=torch.float64).round().long()
    return ts.flip(0)


@torch.no_grad()
def sample(
    eps_fn: EpsFn,
    schedule: DiffusionSchedule,
    noise: torch.Tensor,
    num_steps: int = 100,
    eta: float = 1.0,
    generator: Optional[torch.Generator] = None,
    eps_fn_low: Optional[EpsFn] = None,
    switch_k: int = 0,
    clip_x0: Optional[float] = 1.0,
    callback: Optional[Callable[[int, int], None]] = None,
) -> torch.Tensor:
    """Denoise ``noise`` (= x_T) into x_0.

    Args:
        eps_fn: the (fine-tuned) ε-predictor.
        schedule: the model's schedule.
        noise: [B, C, H, W] standard normal starting point.
        num_steps: number of denoising steps (≤ T).
        eta: 0 = DDIM, 1 = ancestral.
        generator: for the per-step noise when eta > 0 (must live on ``noise.device``).
        eps_fn_low, switch_k: EPAPA: use ``eps_fn_low`` (the base model) for t < switch_k.
        clip_x0: clamp the predicted x_0 to [-clip_x0, clip_x0] (pixel-space models); None for latents.
        callback: called as callback(step_index, num_steps) after each step.

    Returns:
        x_0 [B, C, H, W], same dtype and device as ``noise``.
    """
    ts = strided_timesteps(schedule.num_timesteps, num_steps)
    a_bar = schedule.alphas_cumprod.to(noise.device)
    x = noise
    b = noise.shape[0]
    for i, t in enumerate(ts.tolist()):
        t_prev = int(ts[i + 1]) if i + 1 < len(ts) else -1
        fn = eps_fn_low if (eps_fn_low is not None and t < switch_k) else eps_fn
        eps = fn(x, torch.full((b,), t, device=x.device, dtype=torch.long)).to(torch.float64)
        a_t = a_bar[t]
        a_prev = a_bar[t_prev] if t_prev >= 0 else torch.ones((), dtype=torch.float64, device=x.device)
        xd = x.to(torch.float64)
        x0 = (xd - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        if clip_x0 is not None:
            x0 = x0.clamp(-clip_x0, clip_x0)
            eps = (xd - a_t.sqrt() * x0) / (1 - a_t).sqrt()
        sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).clamp_min(0).sqrt()
        direction = (1 - a_prev - sigma**2).clamp_min(0).sqrt() * eps
        x_new = a_prev.sqrt() * x0 + direction
        if t_prev >= 0 and eta > 0:
            z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x_new = x_new + sigma * z.to(torch.float64)
        x = x_new.to(noise.dtype)
        if callback is not None:
            callback(i + 1, len(ts))
    return x
