"""PAPA's training objective, its reference preset, and the variants the benchmark compares.

Reference (paper; tools/train_papa.py of the reference code), per image i with feedback y_i:

    L_i = pref_coef · y_i · Σ_{t∈S} w_t ‖ε_θ(x_t, t) − ε‖²
        + model_coef · 1[y_i = +1] · ‖ε_θ(x_T', T') − ε_θ*(x_T', T')‖²

with ‖·‖² the mean over pixels, the same ε for every t of the image, S = {0..T-1} (PAPA) or
{k..T-1} (EPAPA), T' the last t of the loop (T-1), and θ* the base model (here: the same network
with the LoRA switched off, no second copy).

Generalisation used throughout (all variants share it, so they differ only in coefficients):

    Δ_i = Σ_j c_j · ( ‖ε_θ(x_{t_j}) − ε‖² − ‖ε_θ*(x_{t_j}) − ε‖² )

estimates the negative-ELBO gap -(log p_θ(x_i) − log p_θ*(x_i)) from a timestep draw (t_j, c_j)
(``estimators``). The θ*-part has no gradient, so the reference's preference term has exactly the
gradient of  pref_coef · y_i · Δ_i  ("linear"). The variants change the per-image coefficient a_i in
the surrogate  (1/B) Σ_i a_i Δ_i :

- ``linear``   a_i = pref_coef · y_i                                 (reference; unbounded)
- ``anchored`` a_i = pref_coef · y_i · σ(β · y_i · Δ_i)              (gradient of softplus(β y Δ)/β:
                fades once an image is β⁻¹-nats more (liked) or less (disliked) likely than under θ*)
- ``dpo``      pairs (liked w, disliked l): softplus(β (Δ_w − Δ_l)) (Diffusion-DPO / D3PO-style)

Feedback y may be graded (any value in [-1, 1]); y = 0 contributes no gradient and is skipped.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Mapping, Optional

import torch

from . import estimators
from .denoiser import Conditioning, Denoiser
from .errors import FeedbackError, NonFiniteError, PapaError

LOSS_KINDS = ("linear", "anchored", "dpo")
MODEL_TERMS = ("none", "reference_last_t", "per_timestep")
MODEL_TERM_ON = ("liked", "disliked", "all")
WEIGHTINGS = ("elbo", "uniform")


@dataclass(frozen=True)
class ObjectiveConfig:
    """How one round's feedback becomes a loss.

    Attributes:
        pref_coef: weight of the preference term (reference 0.1).
        model_coef: weight of the model-similarity term ‖ε_θ − ε_θ*‖² (reference 0.009).
        k: EPAPA's threshold: train only on t ≥ k (0 = PAPA, reference EPAPA 400).
        estimator: timestep estimator (``exact``, ``uniform``, ``importance``, ``importance_stratified``).
        timesteps_per_image: m, the timesteps drawn per image (ignored by ``exact``).
        loss: ``linear`` (reference), ``anchored`` (bounded, relative to θ*) or ``dpo`` (pairwise).
        anchored_on: which feedback the bounded form applies to: ``negative`` or ``both``.
        beta: temperature of ``anchored``/``dpo`` (1/β is the likelihood gap, in the Δ units, where the
            push fades).
        model_term: ``reference_last_t`` (the reference: only at the last t), ``per_timestep`` (mean over
            every drawn t) or ``none``.
        model_term_on: images the model term applies to: ``liked`` (reference), ``disliked`` or ``all``.
        positive_only: treat dislikes as neutral (the reference's ``full_exploitation: False``).
        liked_weight: scales the preference term of liked images against disliked ones (1 = equal;
            ``linear`` and ``anchored``).
        weighting: ``elbo`` (w_t, PAPA) or ``uniform`` (plain denoising loss, the liked-only baseline).
        t0_weight: ``decoder`` (our w_0 = 1/α_0) or ``reference_wraparound`` (the reference's accident).
        shared_noise: one ε per image for all of its timesteps (the reference) or a fresh ε per t.
        max_batch: most (image, t) pairs in one forward pass; bounds activation memory.
    """

    pref_coef: float = 0.1
    model_coef: float = 0.009
    k: int = 0
    estimator: str = "importance_stratified"
    timesteps_per_image: int = 32
    loss: str = "linear"
    anchored_on: str = "negative"
    beta: float = 10.0
    model_term: str = "reference_last_t"
    model_term_on: str = "liked"
    positive_only: bool = False
    liked_weight: float = 1.0
    weighting: str = "elbo"
    t0_weight: str = "decoder"
    shared_noise: bool = True
    max_batch: int = 64

    def __post_init__(self) -> None:
        def choose(name: str, options: tuple) -> None:
            if getattr(self, name) not in options:
                raise PapaError(f"{name} must be one of {options}, got {getattr(self, name)!r}")

        choose("loss", LOSS_KINDS)
        choose("anchored_on", ("negative", "both"))
        choose("model_term", MODEL_TERMS)
        choose("model_term_on", MODEL_TERM_ON)
        choose("weighting", WEIGHTINGS)
        choose("t0_weight", ("decoder", "reference_wraparound"))
        if self.estimator not in estimators.ESTIMATORS:
            raise PapaError(f"estimator must be one of {sorted(estimators.ESTIMATORS)}, got {self.estimator!r}")
        for name in ("pref_coef", "model_coef", "beta", "liked_weight"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise PapaError(f"{name} must be a finite number ≥ 0, got {v!r}")
        if not isinstance(self.k, int) or self.k < 0:
            raise PapaError(f"k must be an integer ≥ 0, got {self.k!r}")
        if not isinstance(self.timesteps_per_image, int) or self.timesteps_per_image < 1:
            raise PapaError(f"timesteps_per_image must be ≥ 1, got {self.timesteps_per_image!r}")
        if not isinstance(self.max_batch, int) or self.max_batch < 1:
            raise PapaError(f"max_batch must be ≥ 1, got {self.max_batch!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> "ObjectiveConfig":
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(d) - known)
        if unknown:
            raise PapaError(f"unknown objective settings {unknown}; known: {sorted(known)}")
        return cls(**dict(d))


OBJECTIVE_PRESETS: dict[str, ObjectiveConfig] = {
    # The reference code's semantics: exact sum over all T steps, linear (unbounded) negative term,
    # model term at the last t for liked images only. Only w_0 differs (see schedule.elbo_weights).
    "reference": ObjectiveConfig(estimator="exact", loss="linear", model_term="reference_last_t",
                                 model_term_on="liked", pref_coef=0.1, model_coef=0.009),
    # EPAPA as the reference configures it (k = 400).
    "epapa": ObjectiveConfig(estimator="exact", k=400, loss="linear", model_term="reference_last_t",
                             model_term_on="liked", pref_coef=0.1, model_coef=0.009),
    # Baselines of the alignment benchmark.
    "liked_only": ObjectiveConfig(estimator="uniform", timesteps_per_image=16, weighting="uniform",
                                  positive_only=True, loss="linear", model_term="none", pref_coef=1.0),
    "dpo": ObjectiveConfig(estimator="uniform", timesteps_per_image=16, weighting="uniform", loss="dpo",
                           beta=1000.0, model_term="none", pref_coef=1.0),
    # The project's default (chosen on the digits benchmark, docs/benchmarks.md): EPAPA's split
    # (train on t ≥ k, sample t < k with the base model) with 4 importance-sampled timesteps per
    # image instead of the exact sum, bounded likes and dislikes anchored at θ*, and the
    # model-similarity term on every drawn t of every image; likes pushed a quarter as hard as
    # dislikes. m = 4 (gradient noise 0.23 relative std, m = 16: 0.05) costs a quarter of m = 16 per
    # round (§5.2); with likes at 0.25 and the similarity term at 0.6 it keeps the variety of the
    # liked set (diversity ≥ 0.9 from round 10, 6 seeds) that m = 4 alone lost in one seed (§3.5).
    "default": ObjectiveConfig(estimator="importance_stratified", timesteps_per_image=4, k=400, loss="anchored",
                               anchored_on="both", beta=10.0, model_term="per_timestep", model_term_on="all",
                               pref_coef=1.0, model_coef=0.6, liked_weight=0.25, max_batch=256),
}


def pick_preset(registry: Mapping, what: str, name: str, **overrides):
    """``registry[name]`` with dataclass fields replaced; a clear error for unknown names."""
    try:
        base = registry[name]
    except KeyError:
        raise PapaError(f"unknown {what} preset {name!r}; choose one of {sorted(registry)}") from None
    return replace(base, **overrides) if overrides else base


def objective_preset(name: str, **overrides) -> ObjectiveConfig:
    return pick_preset(OBJECTIVE_PRESETS, "objective", name, **overrides)


@dataclass
class ObjectiveResult:
    """What one gradient evaluation did. ``loss`` is the objective's value (float), not the surrogate."""

    loss: float
    pref_loss: float
    model_loss: float
    timesteps: int  # (image, t) pairs evaluated with gradient
    forward_passes: int  # network evaluations (base ones included)
    delta: list[float] = field(default_factory=list)  # Δ_i per image (NaN where not computed)


def validate_batch(x0: torch.Tensor, cond: Conditioning, feedback: torch.Tensor) -> None:
    """Raise a clear error for inputs the objective cannot use."""
    if not isinstance(x0, torch.Tensor) or x0.ndim != 4:
        raise PapaError(f"x0 must be a tensor [B, C, H, W], got {getattr(x0, 'shape', type(x0))}")
    b = x0.shape[0]
    if feedback.ndim != 1 or feedback.shape[0] != b:
        raise FeedbackError(f"got {feedback.numel()} feedback values for a batch of {b} images: give exactly "
                            "one per image (+1 like, -1 dislike, 0 neutral)")
    if not torch.isfinite(x0).all():
        raise NonFiniteError("the clean latents x0 contain NaN or inf; regenerate the batch (the sampler or VAE "
                             "produced invalid values) before recording feedback")
    if not torch.isfinite(feedback).all() or (feedback.abs() > 1).any():
        raise FeedbackError("feedback values must be finite and within [-1, 1]")
    for k, v in cond.items():
        if v.shape[0] != b:
            raise PapaError(f"conditioning {k!r} has batch {v.shape[0]}, the images have {b}")
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise NonFiniteError(f"conditioning {k!r} contains NaN or inf")


def elbo_or_uniform_weights(denoiser: Denoiser, cfg: ObjectiveConfig) -> torch.Tensor:
    if cfg.weighting == "uniform":  # the plain denoising loss: the mean over S, not the sum
        n = denoiser.schedule.num_timesteps
        return torch.full((n,), 1.0 / (n - cfg.k), dtype=torch.float64)
    return denoiser.schedule.elbo_weights(cfg.t0_weight)


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
        autocast_dtype: torch.bfloat16 / float16 on GPU, or None.
        noise: optional fixed per-image ε [B, C, H, W] (with ``shared_noise``); drawn from
            ``generator`` when None. Fixing it isolates the timestep estimator's own variance.

    Returns:
        ObjectiveResult; the loss is the mean over the batch of the per-image objective.
    """
    validate_batch(x0, cond, feedback)
    device = denoiser.device
    y = feedback.detach().to(torch.float64).cpu()
    if cfg.positive_only:
        y = y.clamp_min(0)
    b = x0.shape[0]
    w = elbo_or_uniform_weights(denoiser, cfg)
    side = torch.where(y > 0, torch.full_like(y, cfg.liked_weight), torch.ones_like(y))  # liked_weight on likes

    # 1. The (image, t, c, noise) pairs. Neutral images take no part.
    active = [i for i in range(b) if y[i] != 0]
    pairs_i, pairs_t, pairs_c, last_flag = [], [], [], []
    for i in active:
        d = estimators.draw(cfg.estimator, w, cfg.k, cfg.timesteps_per_image, generator)
        pairs_i.append(torch.full_like(d.t, i))
        pairs_t.append(d.t)
        pairs_c.append(d.coef)
        flag = torch.zeros(len(d.t), dtype=torch.bool)
        flag[int(torch.argmax(d.t))] = True
        last_flag.append(flag)
    if not active:
        return ObjectiveResult(0.0, 0.0, 0.0, 0, 0, [float("nan")] * b)
    pi, pt, pc, plast = (torch.cat(v) for v in (pairs_i, pairs_t, pairs_c, last_flag))
    n = len(pi)
    if noise is not None:
        if tuple(noise.shape) != tuple(x0.shape):
            raise PapaError(f"noise must have the images' shape {tuple(x0.shape)}, got {tuple(noise.shape)}")
        per_image_noise = noise.detach().to("cpu", torch.float32)
    else:
        per_image_noise = torch.randn((b,) + tuple(x0.shape[1:]), generator=generator)
    noise = per_image_noise[pi] if cfg.shared_noise else torch.randn((n,) + tuple(x0.shape[1:]), generator=generator)

    # 2. Which images carry the model term, and with what per-pair weight.
    if cfg.model_term_on == "liked":
        gate = (y > 0).to(torch.float64)
    elif cfg.model_term_on == "disliked":
        gate = (y < 0).to(torch.float64)
    else:
        gate = torch.ones(b, dtype=torch.float64)
    counts = torch.bincount(pi, minlength=b).clamp_min(1).to(torch.float64)
    if cfg.model_term == "reference_last_t":
        mweight = gate[pi] * plast.to(torch.float64)
    elif cfg.model_term == "per_timestep":
        mweight = gate[pi] / counts[pi]
    else:
        mweight = torch.zeros(n, dtype=torch.float64)
    mweight = mweight * cfg.model_coef
    need_model = bool((mweight != 0).any())
    need_delta = cfg.loss in ("anchored", "dpo")

    a_bar = denoiser.schedule.alphas_cumprod
    chunks, whole = _chunks(pi, cfg.max_batch)

    def inputs(idx: torch.Tensor):
        i, t = pi[idx], pt[idx]
        a = a_bar[t].to(torch.float32).view(-1, *([1] * (x0.ndim - 1)))
        x0i = x0.detach()[i.to(x0.device)].to(device, torch.float32)
        eps = noise[idx].to(device, torch.float32)
        xt = a.to(device).sqrt() * x0i + (1 - a.to(device)).sqrt() * eps
        c = {k: v.detach()[i.to(v.device)].to(device) for k, v in cond.items()}
        return xt, t.to(device), c, eps

    def run(xt, t, c, lora: bool):
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            return denoiser.eps(xt, t, c, lora=lora)

    forward_passes = 0
    g_base = torch.zeros(n, dtype=torch.float64)
    eps_base_store: dict[int, torch.Tensor] = {}
    g_theta = torch.full((n,), float("nan"), dtype=torch.float64)

    # 3. Pass A (no gradient): θ* errors (for Δ and the model term) and, when a bounded loss needs
    #    an image's coefficient before its chunk's backward (an image split over chunks, or DPO's
    #    coupling of images), θ errors too. With whole images per chunk the gradient pass's own
    #    forward gives the coefficients of the images it holds: one forward pass fewer per pair.
    two_pass = need_delta and len(chunks) > 1 and (cfg.loss == "dpo" or not whole)
    if need_delta or need_model:
        with torch.no_grad():
            for ci, idx in enumerate(chunks):
                # Without a bounded loss only the model-term rows need θ* (one row per image for
                # reference_last_t), so the others are skipped.
                rows = idx if need_delta else idx[mweight[idx] != 0]
                if len(rows) == 0:
                    continue
                xt, t, c, eps = inputs(rows)
                eb = run(xt, t, c, lora=False).float()
                forward_passes += len(rows)
                g_base[rows] = _mse(eb, eps).double().cpu()
                if need_model:
                    full = torch.zeros((len(idx),) + tuple(eb.shape[1:]), device=eb.device)
                    full[torch.searchsorted(idx, rows).to(eb.device)] = eb
                    eps_base_store[ci] = full
                if two_pass:
                    et = run(xt, t, c, lora=True).float()
                    forward_passes += len(rows)
                    g_theta[rows] = _mse(et, eps).double().cpu()

    def coefficients(g_theta_full: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Per-image surrogate coefficients a_i [B], Δ_i [B] and the preference loss value."""
        delta = torch.zeros(b, dtype=torch.float64).index_add_(0, pi, pc * (g_theta_full - g_base))
        ysum = torch.zeros(b, dtype=torch.float64).index_add_(0, pi, pc * g_theta_full)
        a = torch.zeros(b, dtype=torch.float64)
        value = 0.0
        if cfg.loss == "linear":
            a = cfg.pref_coef * side * y
            value = float((cfg.pref_coef * side * y * ysum).sum()) / b
        elif cfg.loss == "anchored":
            for i in active:
                bounded = cfg.anchored_on == "both" or y[i] < 0
                if bounded:
                    z = cfg.beta * y[i] * delta[i]
                    a[i] = cfg.pref_coef * side[i] * y[i] * torch.sigmoid(z)
                    value += cfg.pref_coef * float(side[i] * torch.nn.functional.softplus(z)) / max(cfg.beta, 1e-12)
                else:
                    a[i] = cfg.pref_coef * side[i] * y[i]
                    value += cfg.pref_coef * float(side[i] * y[i] * delta[i])
            value /= b
        else:  # dpo over all (liked, disliked) pairs: softplus(β(Δ_w − Δ_l))/β, weighted by |y_w·y_l|
            liked = [i for i in active if y[i] > 0]
            disliked = [i for i in active if y[i] < 0]
            npairs = len(liked) * len(disliked)
            for wi in liked:
                for li in disliked:
                    z = cfg.beta * (delta[wi] - delta[li])
                    s = float(torch.sigmoid(z)) * float(y[wi] * -y[li])
                    a[wi] += cfg.pref_coef * s / npairs * b
                    a[li] -= cfg.pref_coef * s / npairs * b
                    value += cfg.pref_coef * float(torch.nn.functional.softplus(z)) * float(y[wi] * -y[li]) / max(
                        cfg.beta, 1e-12)
            value = value / max(npairs, 1)
        return a, delta, value

    # 4. Pass B (gradient).
    a = None
    delta = torch.full((b,), float("nan"), dtype=torch.float64)
    pref_value = 0.0
    if two_pass or not need_delta:
        a, delta_c, pref_value = coefficients(g_theta if two_pass else torch.zeros(n, dtype=torch.float64))
        if two_pass:
            delta = delta_c
    model_value = 0.0
    g_theta_b = torch.zeros(n, dtype=torch.float64)
    for ci, idx in enumerate(chunks):
        xt, t, c, eps = inputs(idx)
        et = run(xt, t, c, lora=True).float()
        forward_passes += len(idx)
        err = _mse(et, eps)
        g_theta_b[idx] = err.detach().double().cpu()
        if need_delta and not two_pass:  # whole images in this chunk: their coefficients are exact now
            a, delta, pref_value = coefficients(g_theta_b)
        coef = (a[pi[idx]] * pc[idx] / b).to(device, torch.float32)
        surrogate = (coef * err).sum()
        mw = mweight[idx]
        if need_model and bool((mw != 0).any()):
            m_err = _mse(et, eps_base_store[ci])
            mwd = (mw / b).to(device, torch.float32)
            surrogate = surrogate + (mwd * m_err).sum()
            model_value += float((mwd * m_err.detach()).sum())
        if not torch.isfinite(surrogate):
            raise NonFiniteError("the loss became NaN or inf; the update was not applied. Lower the learning "
                                 "rate or the coefficients, or undo the last update")
        if surrogate.requires_grad:
            surrogate.backward()
    if cfg.loss == "linear":  # the value needs the gradient pass's errors
        pref_value = float((cfg.pref_coef * side * y * torch.zeros(b, dtype=torch.float64).index_add_(
            0, pi, pc * g_theta_b)).sum()) / b
    return ObjectiveResult(
        loss=pref_value + model_value,
        pref_loss=pref_value,
        model_loss=model_value,
        timesteps=n,
        forward_passes=forward_passes,
        delta=[float(v) for v in delta],
    )


def _chunks(pi: torch.Tensor, max_batch: int) -> tuple[list[torch.Tensor], bool]:
    """Split the pairs (sorted by image ``pi``) into forward passes of at most ``max_batch`` pairs.

    Whole images per chunk when every image fits in one (returns True); otherwise fixed-size chunks.
    """
    n = len(pi)
    counts = torch.unique_consecutive(pi, return_counts=True)[1].tolist()
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
