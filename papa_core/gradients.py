"""Runs the objective's terms (``objective``) over the network in bounded passes and back-propagates them.

One gradient evaluation on a batch of B images with feedback y:

1. draw the (image, t) pairs and one ε per image (``objective.draw_pairs``);
2. pass A, no gradient: ‖ε_θ*(x_t, t) − ε‖² (for Δ) and ε_θ* (for the model term) with the LoRA off;
   also ‖ε_θ − ε‖² when a bounded loss needs an image's coefficient before its chunk's backward;
3. pass B, with gradient: the surrogate (1/B) Σ_j a_{i_j} c_j ‖ε_θ − ε‖² + (1/B) Σ_j v_j ‖ε_θ − ε_θ*‖²
   per chunk, then ``backward``. Its gradient is the objective's; its value is not (the value is
   reported separately).

A chunk holds at most ``cfg.max_batch`` pairs: the result does not depend on it (a test keeps it so),
only the activation memory does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .denoiser import Conditioning, Denoiser
from .errors import NonFiniteError, PapaError
from .objective import (NEEDS_DELTA, PAIRWISE, ObjectiveConfig, ObjectiveResult, Pairs, draw_pairs, feedback_weights,
                        model_term_weights, preference_terms, timestep_weights, validate_batch)


@dataclass
class _Passes:
    """What every forward pass reads: the model, the batch, the pairs and their noise."""

    denoiser: Denoiser
    x0: torch.Tensor
    cond: Conditioning
    pairs: Pairs
    noise: torch.Tensor  # [N, C, H, W] float32 on the CPU, ε of each pair
    autocast_dtype: Optional[torch.dtype]
    count: int = 0  # network evaluations so far

    def errors(self, idx: torch.Tensor, lora: bool, target: Optional[torch.Tensor] = None):
        """ε-prediction [n, C, H, W] of pairs ``idx`` and its error ‖ε̂ − ε‖² [n]."""
        device = self.denoiser.device
        i, t = self.pairs.image[idx], self.pairs.t[idx]
        a = self.denoiser.schedule.alphas_cumprod[t].to(torch.float32).view(-1, *([1] * (self.x0.ndim - 1)))
        x0 = self.x0.detach()[i.to(self.x0.device)].to(device, torch.float32)
        eps = self.noise[idx].to(device, torch.float32)
        xt = a.to(device).sqrt() * x0 + (1 - a.to(device)).sqrt() * eps
        c = {k: v.detach()[i.to(v.device)].to(device) for k, v in self.cond.items()}
        with torch.autocast(device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            pred = self.denoiser.eps(xt, t.to(device), c, lora=lora).float()
        self.count += len(idx)
        return pred, _mse(pred, eps)


def accumulate_gradients(
    denoiser: Denoiser,
    x0: torch.Tensor,
    cond: Conditioning,
    feedback: torch.Tensor,
    cfg: ObjectiveConfig,
    generator: Optional[torch.Generator] = None,
    autocast_dtype: Optional[torch.dtype] = None,
    noise: Optional[torch.Tensor] = None,
) -> ObjectiveResult:
    """Evaluate the objective on a batch and add its gradient into the LoRA parameters' ``.grad``.

    Args:
        denoiser: the model (LoRA on = θ, off = θ*).
        x0: [B, C, H, W] clean samples (latents) in the model's data space.
        cond: conditioning, each tensor batched [B, ...].
        feedback: float [B], y_i ∈ [-1, 1] (0 = neutral, skipped).
        cfg: the objective.
        generator: CPU generator for timesteps and noise (reproducibility).
        autocast_dtype: torch.bfloat16 / float16, or None.
        noise: optional fixed per-image ε [B, C, H, W]; drawn from ``generator`` when None. Fixing it
            isolates the timestep estimator's own variance.

    Returns:
        ObjectiveResult; the loss is the mean over the batch of the per-image objective.
    """
    validate_batch(x0, cond, feedback)
    b = x0.shape[0]
    y, side = feedback_weights(feedback, cfg)
    active = torch.nonzero(y).flatten().tolist()  # neutral images take no part
    if not active:
        return ObjectiveResult(0.0, 0.0, 0.0, 0, 0, [float("nan")] * b)
    pairs = draw_pairs(timestep_weights(denoiser.schedule, cfg), active, cfg, generator)
    passes = _Passes(denoiser, x0, cond, pairs, _pair_noise(x0, pairs, noise, generator), autocast_dtype)
    mweight = model_term_weights(pairs, y, cfg)
    chunks, whole = _chunks(pairs.image, cfg.max_batch)
    need_delta = cfg.loss in NEEDS_DELTA
    # Coefficients before any backward only when an image is split over chunks, or DPO couples images
    # of different chunks; otherwise pass B's own forward gives those of the images it holds.
    early = need_delta and len(chunks) > 1 and (cfg.loss in PAIRWISE or not whole)
    err_base, err_theta, eps_base = _pass_a(passes, chunks, mweight, need_delta, early)

    def terms(err: torch.Tensor):
        return preference_terms(pairs, y, side, err, err_base, cfg)

    a, delta, pref_value = terms(err_theta) if early or not need_delta else (None, None, 0.0)
    err_b = torch.zeros(len(pairs), dtype=torch.float64)
    model_value = 0.0
    for ci, idx in enumerate(chunks):
        pred, err = passes.errors(idx, lora=True)
        err_b[idx] = err.detach().double().cpu()
        if need_delta and not early:  # whole images in this chunk: their coefficients are exact now
            a, delta, pref_value = terms(err_b)
        # (1/B) Σ_j a_i c_j ‖ε_θ − ε‖²  +  (1/B) Σ_j v_j ‖ε_θ − ε_θ*‖²
        surrogate = ((a[pairs.image[idx]] * pairs.coef[idx] / b).to(pred.device, torch.float32) * err).sum()
        if bool((mweight[idx] != 0).any()):
            m_err = _mse(pred, eps_base[ci])
            mw = (mweight[idx] / b).to(pred.device, torch.float32)
            surrogate = surrogate + (mw * m_err).sum()
            model_value += float((mw * m_err.detach()).sum())
        if not torch.isfinite(surrogate):
            raise NonFiniteError("the loss became NaN or inf; the update was not applied. Lower the learning "
                                 "rate or the coefficients, or undo the last update")
        if surrogate.requires_grad:
            surrogate.backward()
    if not need_delta:  # linear: its value needs pass B's errors
        _, _, pref_value = terms(err_b)
    shown = delta if need_delta else torch.full((b,), float("nan"), dtype=torch.float64)
    return ObjectiveResult(loss=pref_value + model_value, pref_loss=pref_value, model_loss=model_value,
                           timesteps=len(pairs), forward_passes=passes.count, delta=[float(v) for v in shown])


def _pair_noise(x0: torch.Tensor, pairs: Pairs, noise: Optional[torch.Tensor],
                generator: Optional[torch.Generator]) -> torch.Tensor:
    """One ε per image for all of its timesteps (as the reference), indexed per pair → [N, C, H, W]."""
    if noise is not None:
        if tuple(noise.shape) != tuple(x0.shape):
            raise PapaError(f"noise must have the images' shape {tuple(x0.shape)}, got {tuple(noise.shape)}")
        per_image_noise = noise.detach().to("cpu", torch.float32)
    else:
        per_image_noise = torch.randn(tuple(x0.shape), generator=generator)
    return per_image_noise[pairs.image]


def _pass_a(passes: _Passes, chunks: list[torch.Tensor], mweight: torch.Tensor, need_delta: bool, early: bool):
    """No-gradient pass: ‖ε_θ* − ε‖² [N], ‖ε_θ − ε‖² [N] (only when ``early``; else NaN) and, per chunk,
    ε_θ* of its pairs (for the model term)."""
    n = len(passes.pairs)
    err_base = torch.zeros(n, dtype=torch.float64)
    err_theta = torch.full((n,), float("nan"), dtype=torch.float64)
    eps_base: dict[int, torch.Tensor] = {}
    need_model = bool((mweight != 0).any())
    if not (need_delta or need_model):
        return err_base, err_theta, eps_base
    with torch.no_grad():
        for ci, idx in enumerate(chunks):
            # Without a bounded loss only the model-term rows need θ* (one per image for reference_last_t).
            rows = idx if need_delta else idx[mweight[idx] != 0]
            if len(rows) == 0:
                continue
            pred, err = passes.errors(rows, lora=False)
            err_base[rows] = err.double().cpu()
            if need_model:
                full = torch.zeros((len(idx),) + tuple(pred.shape[1:]), device=pred.device)
                full[torch.searchsorted(idx, rows).to(pred.device)] = pred
                eps_base[ci] = full
            if early:
                err_theta[rows] = passes.errors(rows, lora=True)[1].double().cpu()
    return err_base, err_theta, eps_base


def _chunks(image: torch.Tensor, max_batch: int) -> tuple[list[torch.Tensor], bool]:
    """Split the pairs (sorted by ``image``) into passes of at most ``max_batch`` pairs.

    Whole images per chunk when every image fits in one (returns True); otherwise fixed-size chunks.
    """
    n = len(image)
    counts = torch.unique_consecutive(image, return_counts=True)[1].tolist()
    if max(counts) > max_batch:
        return [torch.arange(s, min(s + max_batch, n)) for s in range(0, n, max_batch)], False
    chunks, start, size = [], 0, 0
    for c in counts:
        if size + c > max_batch:
            chunks.append(torch.arange(start, start + size))
            start, size = start + size, 0
        size += c
    chunks.append(torch.arange(start, start + size))
    return chunks, True


def _mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared error over all non-batch dims → [N]."""
    return (a - b).pow(2).flatten(1).mean(1)
