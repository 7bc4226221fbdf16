"""The scale-free step: each update changes the model's predictions by a set relative amount.

A learning rate is a step in parameter space, and what one step does to a model depends on its
size: the default's lr moved the 1.16 M-parameter digits UNet gently and SD1.5's UNet by a mean
of 32/255 per pixel after one round. The trust region measures an update where it acts — on the
round's own images, at the timesteps the objective trains (t ≥ k) — as the relative change of
the predicted noise,

    ρ(θ) = ‖ε_θ(x_t, t, c) − ε_θ₀(x_t, t, c)‖ / ‖ε_θ₀(x_t, t, c)‖        (norms over all probe pairs)

with θ₀ the LoRA before the update. ε is unit-variance noise at every scale, so ρ means the same
on a 16×16 digits model and on SDXL. After the optimizer's steps, the displacement δ = θ − θ₀ is
scaled along its own direction, θ₀ + s·δ, until ρ lands on the round's target τ (within the
tolerance, and never above τ·(1 + tolerance): the bound a test checks).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from .denoiser import Conditioning, Denoiser

# The learning-strength knob: ρ per update at the first round (it decays with the rounds like the
# lr, ``UpdateConfig.lr_decay_rounds``). "normal" is what the digits default measured before the
# step was scale-free (docs/benchmarks.md §7), so the class-task tuning carries over.
STRENGTHS: dict[str, float] = {"gentle": 0.03, "normal": 0.06, "strong": 0.12}
DEFAULT_STRENGTH = "normal"


# A round whose answers are at least this share 👎 gets the whole target (``answered_share``).
FULL_STEP_DISLIKED = 0.5


def answered_share(feedback: list[float], liked_round_step: float) -> float:
    """The share u of the target an update on rounds with these answers (each in [−1, 1]) gets:

        u = clip( d / FULL_STEP_DISLIKED,  liked_round_step,  1 ),    d = Σ max(−y, 0) / Σ |y|

    d is the share of the answers given that are 👎 (neutral ones say nothing either way). A round
    the person liked throughout asks for little change, and the attribute preference's swing comes
    from such rounds taking whole steps (docs/benchmarks.md §7.4, §7.6, §7.9); a round without an answer
    gets the whole target, as without this rule."""
    answered = sum(abs(y) for y in feedback)
    if answered == 0:
        return 1.0
    d = sum(max(-y, 0.0) for y in feedback) / answered
    return min(1.0, max(liked_round_step, d / FULL_STEP_DISLIKED))


@dataclass(frozen=True)
class TrustRegion:
    """How the step is fitted to the target change.

    Attributes:
        tolerance: accept ρ within τ·(1 ± tolerance).
        max_scale: largest s (a step may grow up to this multiple of the optimizer's). 3: with the LoRA
            held to θ* below k, the digits UNet's second and third updates need up to 2.7 (2 left them at
            0.58–0.70 of the target on three of six seeds; docs/benchmarks.md §7.17).
        evaluations: most probe evaluations of the line search before backtracking.
        probe_images: labelled images of the new round(s) the change is measured on.
        probe_timesteps: timesteps per probe image (stratified over t ≥ k).
    """

    tolerance: float = 0.1
    max_scale: float = 3.0
    evaluations: int = 5
    probe_images: int = 8
    probe_timesteps: int = 8


@dataclass
class Probe:
    """Fixed (x_t, t, c) pairs and the predictions ε_θ₀ of the LoRA before the update.

    x_t [P, C, H, W], t long [P], cond: batched like x_t, eps0 [P, C, H, W] float; noise [P, C, H, W]
    float on the CPU, the ε each x_t was made with (for errors ‖ε̂ − ε‖², ``benchmarks.bold_walk``).
    """

    x_t: torch.Tensor
    t: torch.Tensor
    cond: Conditioning
    eps0: torch.Tensor
    noise: torch.Tensor


@torch.no_grad()
def make_probe(denoiser: Denoiser, x0: torch.Tensor, cond: Conditioning, k: int, per_image: int,
               g: torch.Generator, chunk: int) -> Probe:
    """``per_image`` noised copies of each image in ``x0`` [B, C, H, W], with ε_θ₀; their timesteps are
    stratified over {k..T−1} (one in each of ``per_image`` equal strata: ρ depends strongly on t, and
    stratifying keeps the estimate from swinging with the draw)."""
    n = x0.shape[0] * per_image
    dev = denoiser.device
    idx = torch.arange(x0.shape[0]).repeat_interleave(per_image)
    width = (denoiser.schedule.num_timesteps - k) / per_image
    strata = torch.arange(per_image).repeat(x0.shape[0])
    t = (k + (strata + torch.rand(n, generator=g)) * width).long().clamp(max=denoiser.schedule.num_timesteps - 1)
    noise = torch.randn((n, *x0.shape[1:]), generator=g)
    x_t = denoiser.schedule.add_noise(x0[idx].float().cpu(), noise, t).to(dev)
    t, c = t.to(dev), {key: v[idx].to(dev) for key, v in cond.items()}
    return Probe(x_t, t, c, _predict(denoiser, x_t, t, c, chunk), noise)


def _predict(denoiser: Denoiser, x_t, t, cond, chunk: int) -> torch.Tensor:
    parts = [denoiser.eps(x_t[i:i + chunk], t[i:i + chunk], {key: v[i:i + chunk] for key, v in cond.items()})
             for i in range(0, x_t.shape[0], chunk)]
    return torch.cat(parts).float()


@torch.no_grad()
def relative_change(denoiser: Denoiser, probe: Probe, chunk: int) -> float:
    """ρ = ‖ε_θ − ε_θ₀‖ / ‖ε_θ₀‖ over the probe, with the denoiser's current LoRA as θ."""
    eps = _predict(denoiser, probe.x_t, probe.t, probe.cond, chunk)
    return float((eps - probe.eps0).norm() / probe.eps0.norm().clamp_min(1e-12))


@dataclass
class FittedStep:
    scale: float  # s: the step taken is s × the optimizer's displacement
    change: float  # ρ measured at that step
    target: float  # τ
    evaluations: int


@torch.no_grad()
def fit_step(params: list[torch.nn.Parameter], start: list[torch.Tensor], measure: Callable[[], float],
             target: float, region: TrustRegion = TrustRegion()) -> FittedStep:
    """Set ``params`` to θ₀ + s·δ (θ₀ = ``start``, δ = params − start) with ρ(s) ≈ ``target``.

    ρ(s) is not proportional to s: the LoRA's product B·A adds an s² term, which dominates on small
    models (the digits UNet, first update: ρ(1) = 0.018, ρ(2) = 0.133). Each evaluation aims through
    a power law ρ ∝ s^p fitted to the measurements nearest the target (``next_scale``); a step still
    above the bound afterwards is halved until it fits.
    """
    delta = [p.detach() - s0 for p, s0 in zip(params, start)]
    bound = target * (1 + region.tolerance)

    def place(s: float) -> None:
        for p, s0, d in zip(params, start, delta):
            p.copy_(s0 + s * d)

    seen = [(1.0, measure())]
    while len(seen) < region.evaluations and abs(seen[-1][1] / target - 1) > region.tolerance and seen[-1][1] > 0:
        s = next_scale(seen, target, region.max_scale)
        if s is None:  # at the cap: the optimizer's direction cannot reach the target
            break
        place(s)
        seen.append((s, measure()))
    while all(x[1] > bound for x in seen):  # backtrack: always ends, ρ → 0 as s → 0
        s = min(x[0] for x in seen) / 2
        place(s)
        seen.append((s, measure()))
    best = min((x for x in seen if x[1] <= bound), key=lambda x: abs(x[1] - target))
    if best is not seen[-1]:
        place(best[0])
    return FittedStep(scale=best[0], change=best[1], target=target, evaluations=len(seen))


def next_scale(seen: list[tuple[float, float]], target: float, cap: float) -> Optional[float]:
    """The next s to measure, from the (s, ρ) measured so far; None when the cap is measured and below.

    With measurements on both sides of the target, between the largest s below it and the smallest
    above it: ρ_lo · (s / s_lo)^p = target with p from those two, kept inside that bracket (10 % from
    either end). On one side only: the same from the measurement nearest the target, p from the two
    nearest (1 from a single one, i.e. through ρ(0) = 0).
    """
    above = [x for x in seen if x[1] > target]
    hi = min(above) if above else None
    below = [x for x in seen if x[1] < target and (hi is None or x[0] < hi[0])]
    lo = max(below) if below else None
    if hi is None:  # only below: step up along the two largest s
        if lo[0] >= cap:
            return None
        pair = sorted(below)[-2:]
        return min(cap, _power_law(pair, lo, target))
    if lo is None:  # only above: step down along the two smallest s
        return _power_law(sorted(above)[:2], hi, target)
    s = _power_law([lo, hi], lo, target)
    margin = 0.1 * (hi[0] - lo[0])
    return min(max(s, lo[0] + margin), hi[0] - margin)


def _power_law(pair: list[tuple[float, float]], anchor: tuple[float, float], target: float) -> float:
    """s with anchor_ρ · (s / anchor_s)^p = target, p the log-log slope of ``pair`` (1 if it has one
    point or a slope ≤ 0, where ρ is not increasing in s there)."""
    p = 1.0
    if len(pair) == 2 and pair[0][0] != pair[1][0] and min(pair[0][1], pair[1][1]) > 0:
        slope = math.log(pair[1][1] / pair[0][1]) / math.log(pair[1][0] / pair[0][0])
        p = slope if slope > 0 else 1.0
    return anchor[0] * (target / anchor[1]) ** (1 / p)
