"""Measuring the timestep estimators: gradient noise against the exact sum over S."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import torch

from .denoiser import Conditioning, Denoiser
from .gradients import accumulate_gradients
from .objective import ObjectiveConfig


def lora_gradient(denoiser: Denoiser, x0: torch.Tensor, cond: Conditioning, y: torch.Tensor, cfg: ObjectiveConfig,
                  noise: torch.Tensor, generator: Optional[torch.Generator] = None,
                  autocast_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """The flattened LoRA gradient of one objective evaluation (float64 [P])."""
    params = denoiser.lora_parameters()
    for p in params:
        p.grad = None
    accumulate_gradients(denoiser, x0, cond, y, cfg, generator=generator, noise=noise, autocast_dtype=autocast_dtype)
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).detach().reshape(-1).double().cpu()
                      for p in params])


@dataclass
class NoiseReport:
    estimator: str
    timesteps_per_image: int
    rel_std: float  # sqrt(E‖g − g*‖²) / ‖g*‖ over the draws
    mean_cosine: float  # mean cos(g, g*)
    rel_bias: float  # ‖mean(g) − g*‖ / ‖g*‖ (shrinks as 1/sqrt(draws) for an unbiased estimator)


def estimator_noise(denoiser: Denoiser, x0: torch.Tensor, cond: Conditioning, y: torch.Tensor,
                    base: ObjectiveConfig, estimators: list[str], ms: list[int], draws: int, seed: int = 0,
                    exact: Optional[torch.Tensor] = None,
                    autocast_dtype: Optional[torch.dtype] = None) -> tuple[torch.Tensor, list[NoiseReport]]:
    """Compare each (estimator, m) to the exact-sum gradient with ε fixed per image, so only the
    timestep draw varies. ``base`` supplies k, weighting and the loss kind. With ``autocast_dtype``
    the draws run under autocast while the exact sum stays in fp32, so the report includes the
    reduced precision's own error."""
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    if exact is None:
        exact = lora_gradient(denoiser, x0, cond, y, replace(base, estimator="exact"), noise)
    norm = float(exact.norm())
    out = []
    for name in estimators:
        for m in ms:
            g = torch.Generator().manual_seed(seed + 1)
            cfg = replace(base, estimator=name, timesteps_per_image=m)
            grads = torch.stack([lora_gradient(denoiser, x0, cond, y, cfg, noise, g, autocast_dtype)
                                 for _ in range(draws)])
            err = (grads - exact).pow(2).sum(1).mean().sqrt()
            cos = torch.nn.functional.cosine_similarity(grads, exact.unsqueeze(0), dim=1).mean()
            out.append(NoiseReport(name, m, float(err) / norm, float(cos),
                                   float((grads.mean(0) - exact).norm()) / norm))
    return exact, out
