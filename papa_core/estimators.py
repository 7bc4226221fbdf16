"""Timestep estimators for PAPA's weighted sum over steps.

PAPA's preference term for one image is  F = Σ_{t∈S} w_t · g(t),  g(t) = ‖ε_θ(x_t, t) − ε‖²,
with S = {0..T-1} (PAPA) or {k..T-1} (EPAPA). The exact sum costs |S| forward+backward passes per
image. Each estimator here returns timesteps t_j and coefficients c_j (j = 1..m) such that

    E[ Σ_j c_j · g(t_j) ] = Σ_{t∈S} w_t · g(t)     for every function g,

so a few timesteps give an unbiased gradient. Because w_t is concentrated at the low-noise end
(w_0 ≈ 1, w_1 ≈ 1.2, then ≈ 2/t for the linear schedule), drawing t ∝ w_t (importance sampling)
is far less noisy than uniform draws.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from .errors import PapaError

ESTIMATORS: dict[str, Callable] = {}


def _register(name: str):
    def deco(fn):
        ESTIMATORS[name] = fn
        return fn

    return deco


@dataclass(frozen=True)
class TimestepDraw:
    """t: long [m]; coef: float64 [m] (already includes w_t and the sampling rescale)."""

    t: torch.Tensor
    coef: torch.Tensor


def support(num_timesteps: int, k: int) -> torch.Tensor:
    """S = {k, ..., T-1} as a long tensor."""
    if not 0 <= k < num_timesteps:
        raise PapaError(f"EPAPA k must be in [0, {num_timesteps - 1}], got {k}")
    return torch.arange(k, num_timesteps)


@_register("exact")
def exact(w: torch.Tensor, k: int, m: int, generator: Optional[torch.Generator] = None) -> TimestepDraw:
    """Every t in S with c_t = w_t (m is ignored). Deterministic."""
    s = support(len(w), k)
    return TimestepDraw(s, w[s].clone())


@_register("uniform")
def stratified_uniform(w: torch.Tensor, k: int, m: int, generator: Optional[torch.Generator] = None) -> TimestepDraw:
    """Split S into m contiguous strata of (nearly) equal size, draw one t uniformly in each.

    c_j = w_{t_j} · |stratum_j| makes each stratum's term unbiased for its part of the sum.
    """
    s = support(len(w), k)
    m = _check_m(m, len(s))
    edges = torch.linspace(0, len(s), m + 1, dtype=torch.float64).round().long()
    lo, hi = edges[:-1], edges[1:]
    u = torch.rand(m, generator=generator, dtype=torch.float64)
    idx = lo + (u * (hi - lo)).floor().long().clamp_max(hi - lo - 1)
    t = s[idx]
    return TimestepDraw(t, w[t] * (hi - lo).to(torch.float64))


@_register("importance")
def importance(w: torch.Tensor, k: int, m: int, generator: Optional[torch.Generator] = None) -> TimestepDraw:
    """m i.i.d. draws from p(t) = w_t / W on S (W = Σ_S w_t); c_j = w_t / (m p(t)) = W / m."""
    s = support(len(w), k)
    m = _check_m(m, len(s))
    p = w[s] / w[s].sum()
    idx = torch.multinomial(p, m, replacement=True, generator=generator)
    return TimestepDraw(s[idx], torch.full((m,), float(w[s].sum()) / m, dtype=torch.float64))


@_register("importance_stratified")
def importance_stratified(w: torch.Tensor, k: int, m: int,
                          generator: Optional[torch.Generator] = None) -> TimestepDraw:
    """Systematic-stratified importance sampling: u_j = (j + U_j)/m pushed through the inverse CDF of p.

    Each u_j is uniform on its own 1/m slice, so every draw is marginally ∝ w_t and the estimate
    stays unbiased, while the draws cover the whole range of t (lower variance than i.i.d.).
    """
    s = support(len(w), k)
    m = _check_m(m, len(s))
    total = w[s].sum()
    cdf = torch.cumsum(w[s] / total, 0)
    u = (torch.arange(m, dtype=torch.float64) + torch.rand(m, generator=generator, dtype=torch.float64)) / m
    idx = torch.searchsorted(cdf, u.clamp_max(cdf[-1].item() - 1e-15), right=True).clamp_max(len(s) - 1)
    return TimestepDraw(s[idx], torch.full((m,), float(total) / m, dtype=torch.float64))


def _check_m(m: int, n: int) -> int:
    if not isinstance(m, int) or m < 1:
        raise PapaError(f"timesteps per image must be a positive integer, got {m!r}")
    return min(m, n)


def draw(name: str, w: torch.Tensor, k: int, m: int, generator: Optional[torch.Generator] = None) -> TimestepDraw:
    """Dispatch by name (``exact``, ``uniform``, ``importance``, ``importance_stratified``)."""
    try:
        fn = ESTIMATORS[name]
    except KeyError:
        raise PapaError(f"unknown timestep estimator {name!r}; choose one of {sorted(ESTIMATORS)}") from None
    return fn(w, k, m, generator)
