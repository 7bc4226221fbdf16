"""The discrete DDPM noise schedule, read from a model rather than hard-coded.

Everything PAPA needs is a function of the cumulative product ``alphas_cumprod``
(ᾱ_t, t = 0..T-1) that the base model was trained with:

    ᾱ_{-1} = 1,   α_t = ᾱ_t / ᾱ_{t-1},   β_t = 1 - α_t
    x_t    = sqrt(ᾱ_t) · x_0 + sqrt(1 - ᾱ_t) · ε

and the ELBO weight of the ε-prediction error at step t (paper eq. for the
variational bound, up to its constant factor 1/2):

    w_t = β_t / (α_t · (1 - ᾱ_{t-1}))          for t ≥ 1
    w_0 = 1 / α_0                               (see ``elbo_weights``)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DiffusionSchedule:
    """A DDPM schedule given by its cumulative alphas.

    Attributes:
        alphas_cumprod: float64 tensor [T], strictly decreasing in (0, 1].
    """

    alphas_cumprod: torch.Tensor

    def __post_init__(self) -> None:
        a = self.alphas_cumprod
        if a.ndim != 1 or a.numel() < 2:
            raise ValueError(f"alphas_cumprod must be a 1-D tensor of length ≥ 2, got shape {tuple(a.shape)}")
        if not torch.isfinite(a).all() or (a <= 0).any() or (a > 1).any():
            raise ValueError("alphas_cumprod must be finite and lie in (0, 1]")
        if (a[1:] >= a[:-1]).any():
            raise ValueError("alphas_cumprod must be strictly decreasing (is this really a DDPM schedule?)")
        object.__setattr__(self, "alphas_cumprod", a.detach().to("cpu", torch.float64).clone())

    # --- constructors -------------------------------------------------------------------------
    @classmethod
    def linear(cls, num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> "DiffusionSchedule":
        """The DDPM paper's linear β schedule (the reference's digits model)."""
        betas = torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)
        return cls(torch.cumprod(1.0 - betas, dim=0))

    @classmethod
    def scaled_linear(cls, num_timesteps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012) -> "DiffusionSchedule":
        """Stable Diffusion's schedule: β linear in sqrt-space."""
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_timesteps, dtype=torch.float64) ** 2
        return cls(torch.cumprod(1.0 - betas, dim=0))

    @classmethod
    def from_sigmas(cls, sigmas: torch.Tensor) -> "DiffusionSchedule":
        """From k-diffusion σ_t = sqrt((1 - ᾱ_t) / ᾱ_t), as ComfyUI's model_sampling stores them."""
        s = sigmas.detach().to("cpu", torch.float64)
        return cls(1.0 / (1.0 + s * s))

    @classmethod
    def from_diffusers_scheduler(cls, scheduler) -> "DiffusionSchedule":
        """From any diffusers scheduler that exposes ``alphas_cumprod`` (DDPM, DDIM, Euler, ...)."""
        if not hasattr(scheduler, "alphas_cumprod"):
            raise TypeError(f"{type(scheduler).__name__} has no alphas_cumprod; pass a DDPM-family scheduler")
        return cls(torch.as_tensor(scheduler.alphas_cumprod))

    # --- derived quantities ---------------------------------------------------------------------
    @property
    def num_timesteps(self) -> int:
        return int(self.alphas_cumprod.numel())

    @property
    def alphas_cumprod_prev(self) -> torch.Tensor:
        """ᾱ_{t-1} with ᾱ_{-1} = 1, float64 [T]."""
        return torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])

    @property
    def alphas(self) -> torch.Tensor:
        return self.alphas_cumprod / self.alphas_cumprod_prev

    @property
    def betas(self) -> torch.Tensor:
        return 1.0 - self.alphas

    @property
    def sigmas(self) -> torch.Tensor:
        """k-diffusion σ_t = sqrt((1-ᾱ_t)/ᾱ_t), float64 [T]."""
        return ((1.0 - self.alphas_cumprod) / self.alphas_cumprod).sqrt()

    def elbo_weights(self, t0: str = "decoder") -> torch.Tensor:
        """w_t, float64 [T], the per-step weight of ‖ε_θ(x_t, t) − ε‖² in the negative ELBO.

        For t ≥ 1, with the posterior variance σ_t² = β̃_t = (1-ᾱ_{t-1})/(1-ᾱ_t)·β_t, the KL term
        L_{t-1} = β_t² / (2 σ_t² α_t (1-ᾱ_t)) ‖ε_θ − ε‖² = β_t / (2 α_t (1-ᾱ_{t-1})) ‖ε_θ − ε‖².
        The constant 1/2 is dropped, as in the reference.

        At t = 0 the formula divides by 1 - ᾱ_{-1} = 0. The reference code indexes ᾱ[t-1] and Python
        wraps to ᾱ[T-1], which gives w_0 ≈ β_0 ≈ 1e-4: an accident, not a modelling choice. We
        define it from the decoder term L_0 of a Gaussian decoder with variance σ_0² = β_0 (the other
        DDPM choice σ_t² = β_t, the only one finite at t = 0):
        β_0² / (2 β_0 α_0 (1-ᾱ_0)) = 1 / (2 α_0), i.e. w_0 = 1/α_0 ≈ 1 after dropping 1/2. This keeps
        w_t continuous at the low-noise end (w_1 ≈ 1.2 for the linear schedule).

        Args:
            t0: "decoder" (the definition above) or "reference_wraparound" (the reference's value,
                kept only to document and test the difference).
        """
        a_bar_prev = self.alphas_cumprod_prev
        w = self.betas / (self.alphas * (1.0 - a_bar_prev).clamp_min(1e-300))
        if t0 == "decoder":
            w[0] = 1.0 / self.alphas[0]
        elif t0 == "reference_wraparound":
            w[0] = self.betas[0] / (self.alphas[0] * (1.0 - self.alphas_cumprod[-1]))
        else:
            raise ValueError(f"t0 must be 'decoder' or 'reference_wraparound', got {t0!r}")
        return w

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(ᾱ_t) x_0 + sqrt(1-ᾱ_t) ε.

        Args:
            x0, noise: [B, ...] in the model's data space.
            t: long [B] timesteps in [0, T).
        """
        a = self.alphas_cumprod.to(x0.device)[t].to(x0.dtype)
        shape = (-1,) + (1,) * (x0.ndim - 1)
        return a.sqrt().view(shape) * x0 + (1.0 - a).sqrt().view(shape) * noise
