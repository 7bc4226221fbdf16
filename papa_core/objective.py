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

EPAPA samples t < k with θ*; a LoRA file acts at every step in every host, so with ``below_k_timesteps``
the LoRA is held to θ* there instead, on every labelled image:  + model_coef · mean_{t<k} ‖ε_θ − ε_θ*‖²
(uniform t < k, no preference term).

This module holds the terms, one function per formula; ``gradients.accumulate_gradients`` runs them
over the network in bounded passes and back-propagates the surrogate.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Mapping, Optional

import torch

from . import estimators
from .denoiser import Conditioning
from .errors import NonFiniteError, PapaError
from .feedback import check_feedback
from .memory import DEFAULT_MAX_PAIRS
from .schedule import DiffusionSchedule

LOSS_KINDS = ("linear", "anchored", "dpo")
MODEL_TERMS = ("none", "reference_last_t", "per_timestep")
MODEL_TERM_ON = ("liked", "all")
EPAPA_K = 400  # EPAPA's threshold in the reference code: train on t ≥ 400 of T = 1000
# The default's threshold. EPAPA's 400 assumed its sampler (θ* below k); a LoRA file acts at every step, so
# the preference is trained down to t = 200, where the hosts apply it too, and held to θ* below: the class
# task then holds ≥ 0.92 from round 10 (six seeds) and survives 10 % flipped answers, at a slower start
# (docs/benchmarks.md §7.18).
DEFAULT_K = 200
WEIGHTINGS = ("elbo", "uniform")


# Fields older versions had, with the one value they were ever set to (now how it always works): one
# ε per image for all of its t, as the reference; w_0 = 1/α_0 (schedule.elbo_weights).
RETIRED = {"t0_weight": "decoder", "shared_noise": True}


def without_retired(d: Mapping, retired: Mapping) -> dict:
    """``d`` without the retired fields that hold the value they always had (a file written by an
    older version); a retired field with another value stays, and is refused as unknown."""
    return {k: v for k, v in d.items() if not (k in retired and retired[k] == v)}


@dataclass(frozen=True)
class ObjectiveConfig:
    """How one round's feedback becomes a loss.

    Attributes:
        pref_coef: weight of the preference term (reference 0.1).
        model_coef: weight of the model-similarity term ‖ε_θ − ε_θ*‖² (reference 0.009).
        k: EPAPA's threshold: train only on t ≥ k (0 = PAPA; the reference's EPAPA: ``EPAPA_K``).
        estimator: timestep estimator (``exact``, ``uniform``, ``importance``, ``importance_stratified``).
        timesteps_per_image: m, the timesteps drawn per image (ignored by ``exact``).
        loss: ``linear`` (reference), ``anchored`` (bounded, relative to θ*) or ``dpo`` (pairwise).
        anchored_on: which feedback the bounded form applies to: ``negative`` or ``both``.
        beta: temperature of ``anchored``/``dpo`` (1/β is the likelihood gap, in the Δ units, where the
            push fades).
        model_term: ``reference_last_t`` (the reference: only at the last t), ``per_timestep`` (mean over
            every drawn t) or ``none``.
        model_term_on: images the model term applies to: ``liked`` (reference) or ``all``.
        positive_only: treat dislikes as neutral (the reference's ``full_exploitation: False``).
        liked_weight: scales the preference term of liked images against disliked ones (1 = equal;
            ``linear`` and ``anchored``; ``dpo`` weighs both sides of a pair alike).
        weighting: ``elbo`` (w_t, PAPA) or ``uniform`` (plain denoising loss, the liked-only baseline).
        max_batch: most (image, t) pairs in one forward pass; bounds activation memory.
        below_k_timesteps: with k > 0, timesteps per image drawn uniformly from t < k for the similarity
            term alone (weight ``model_coef`` over their mean, on every labelled image). EPAPA's sampler
            denoises t < k with θ*; a LoRA file cannot switch itself off there, so every host applies it at
            every step, where the preference never trained it: this holds it to θ* below k instead.
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
    max_batch: int = DEFAULT_MAX_PAIRS
    below_k_timesteps: int = 0

    def __post_init__(self) -> None:
        def choose(name: str, options: tuple) -> None:
            if getattr(self, name) not in options:
                raise PapaError(f"{name} must be one of {options}, got {getattr(self, name)!r}")

        choose("loss", LOSS_KINDS)
        choose("anchored_on", ("negative", "both"))
        choose("model_term", MODEL_TERMS)
        choose("model_term_on", MODEL_TERM_ON)
        choose("weighting", WEIGHTINGS)
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
        if not isinstance(self.below_k_timesteps, int) or self.below_k_timesteps < 0:
            raise PapaError(f"below_k_timesteps must be an integer ≥ 0, got {self.below_k_timesteps!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> "ObjectiveConfig":
        d = without_retired(d, RETIRED)
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
    "epapa": ObjectiveConfig(estimator="exact", k=EPAPA_K, loss="linear", model_term="reference_last_t",
                             model_term_on="liked", pref_coef=0.1, model_coef=0.009),
    # Baselines of the alignment benchmark.
    "liked_only": ObjectiveConfig(estimator="uniform", timesteps_per_image=16, weighting="uniform",
                                  positive_only=True, loss="linear", model_term="none", pref_coef=1.0),
    "dpo": ObjectiveConfig(estimator="uniform", timesteps_per_image=16, weighting="uniform", loss="dpo",
                           beta=1000.0, model_term="none", pref_coef=1.0),
    # The project's default (chosen on the digits benchmark, docs/benchmarks.md): EPAPA's split
    # (train on t ≥ k, here ``DEFAULT_K``) with 4 importance-sampled timesteps per
    # image instead of the exact sum, bounded likes and dislikes anchored at θ*, and the
    # model-similarity term on every drawn t of every image; likes pushed a quarter as hard as
    # dislikes. m = 4 (gradient noise 0.23 relative std, m = 16: 0.05) costs a quarter of m = 16 per
    # round (§5.2); likes at 0.25 keep the variety of the liked set that m = 4 alone lost (§3.5).
    # Below k one more timestep per image holds the LoRA to θ* (``below_k_timesteps``): every host applies
    # a LoRA at every step, where EPAPA's sampler would use θ* (§7.17: without it the class task's liked
    # digits narrow to 0.68 diversity and the samples leave real digits). With k = 200 the similarity
    # term is 0.8 (0.6 with k = 400): the lower k pushes harder late, and the stronger pull keeps the liked
    # digits varied (diversity 0.85 / 0.92 at rounds 10 / 20 against 0.79 / 0.89 with 0.6, six seeds; §7.18).
    "default": ObjectiveConfig(estimator="importance_stratified", timesteps_per_image=4, k=DEFAULT_K, loss="anchored",
                               anchored_on="both", beta=10.0, model_term="per_timestep", model_term_on="all",
                               pref_coef=1.0, model_coef=0.8, liked_weight=0.25, below_k_timesteps=1),
}
# The default with the preference term on pairs of a liked and a disliked image of the same step
# (softplus(β(Δ_w − Δ_l)) / β) instead of each image against θ*: the terms of a step then sum to zero,
# so a bias shared by every image the LoRA draws cannot satisfy them, and a rare 👎 weighs as much as
# the step's likes together (docs/benchmarks.md §7.7–7.8). pref_coef 0.3 against the similarity
# term's 0.6 (1.0 narrowed the liked set further); a pair's two sides weigh alike (liked_weight 1).
# EPAPA's k = 400 and the similarity term at 0.6, not the default's 200 and 0.8: with k = 200 the
# bold-strokes task read higher on six seeds (0.94–1.00 on the mean, three checkpoints of thirty under 0.9;
# with 400 0.87–0.98, six) but the demo's seed dipped to 0.73 at round 20 (the demo printed 79 %) and the
# samples were further from real digits at round 5 (+18 %; §7.18).
OBJECTIVE_PRESETS["style"] = replace(OBJECTIVE_PRESETS["default"], loss="dpo", pref_coef=0.3, liked_weight=1.0,
                                     k=EPAPA_K, model_coef=0.6)


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
    check_feedback(feedback.tolist(), b)
    if not torch.isfinite(x0).all():
        raise NonFiniteError("the clean latents x0 contain NaN or inf; regenerate the batch (the sampler or VAE "
                             "produced invalid values) before recording feedback")
    for k, v in cond.items():
        if v.shape[0] != b:
            raise PapaError(f"conditioning {k!r} has batch {v.shape[0]}, the images have {b}")
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise NonFiniteError(f"conditioning {k!r} contains NaN or inf")


# --- the paper's terms, per (image, t) pair --------------------------------------------------------

@dataclass(frozen=True)
class Pairs:
    """The (image, t) pairs of one gradient evaluation, sorted by image.

    image: long [N], the image i of each pair; t: long [N]; coef: float64 [N], the estimator's c_j
    (Σ_j c_j f(t_j) estimates Σ_t w_t f(t)); last: bool [N], the largest drawn t of each image (T').
    """

    image: torch.Tensor
    t: torch.Tensor
    coef: torch.Tensor
    last: torch.Tensor

    def __len__(self) -> int:
        return len(self.image)


def timestep_weights(schedule: DiffusionSchedule, cfg: ObjectiveConfig) -> torch.Tensor:
    """w_t [T] float64: the ELBO's (PAPA) or, for ``uniform``, the plain denoising loss's mean over S."""
    if cfg.weighting == "uniform":
        n = schedule.num_timesteps
        return torch.full((n,), 1.0 / (n - cfg.k), dtype=torch.float64)
    return schedule.elbo_weights()


def draw_pairs(w: torch.Tensor, images: list[int], cfg: ObjectiveConfig,
               generator: Optional[torch.Generator]) -> Pairs:
    """For each image in ``images``, m timesteps t ∈ S = {k..T-1} and their coefficients (``estimators``),
    then ``below_k_timesteps`` uniform t < k with coefficient 0 (the similarity term's alone)."""
    parts = []
    low = cfg.below_k_timesteps if cfg.k > 0 else 0
    for i in images:
        d = estimators.draw(cfg.estimator, w, cfg.k, cfg.timesteps_per_image, generator)
        last = torch.zeros(len(d.t), dtype=torch.bool)
        last[int(torch.argmax(d.t))] = True
        parts.append((torch.full_like(d.t, i), d.t, d.coef, last))
        if low:
            t = torch.randint(0, cfg.k, (low,), generator=generator)
            parts.append((torch.full_like(t, i), t, torch.zeros(low, dtype=torch.float64),
                          torch.zeros(low, dtype=torch.bool)))
    return Pairs(*(torch.cat(v) for v in zip(*parts)))


def feedback_weights(feedback: torch.Tensor, cfg: ObjectiveConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """y [B] float64 (dislikes zeroed with ``positive_only``) and the side weight s_i [B]:
    ``liked_weight`` on likes, 1 on the rest."""
    y = feedback.detach().to(torch.float64).cpu()
    if cfg.positive_only:
        y = y.clamp_min(0)
    side = torch.where(y > 0, torch.full_like(y, cfg.liked_weight), torch.ones_like(y))
    return y, side


def model_term_weights(pairs: Pairs, y: torch.Tensor, cfg: ObjectiveConfig) -> torch.Tensor:
    """Per-pair weight v_j [N] of  model_coef · ‖ε_θ(x_t, t) − ε_θ*(x_t, t)‖².

    ``reference_last_t``: v = model_coef · 1[y_i > 0] at T' only (the paper's term).
    ``per_timestep``:     v = model_coef · g_i / m_i on every drawn t ≥ k (the mean over the image's pairs).
    Below k (``below_k_timesteps`` = m_low): v = model_coef / m_low on every image (g_i = 1: the LoRA is
    held to θ* there whatever the answer, as EPAPA's sampler would hold it).
    """
    b = len(y)
    below = pairs.t < cfg.k
    gate = (y > 0).to(torch.float64) if cfg.model_term_on == "liked" else torch.ones(b, dtype=torch.float64)
    if cfg.model_term == "reference_last_t":
        v = gate[pairs.image] * pairs.last.to(torch.float64)
    elif cfg.model_term == "per_timestep":
        counts = torch.bincount(pairs.image[~below], minlength=b).clamp_min(1).to(torch.float64)
        v = gate[pairs.image] / counts[pairs.image]
    else:
        v = torch.zeros(len(pairs), dtype=torch.float64)
    v = torch.where(below, torch.full_like(v, 1.0 / max(cfg.below_k_timesteps, 1)), v)
    return v * cfg.model_coef


def per_image(pairs: Pairs, values: torch.Tensor, b: int) -> torch.Tensor:
    """Σ_j c_j values_j per image → [B] float64."""
    return torch.zeros(b, dtype=torch.float64).index_add_(0, pairs.image, pairs.coef * values)


def linear_terms(y: torch.Tensor, side: torch.Tensor, delta: torch.Tensor, cfg: ObjectiveConfig,
                 err: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The reference:  a_i = pref_coef · s_i · y_i;  value (1/B) Σ_i a_i Σ_j c_j ‖ε_θ − ε‖²  (``err`` [B])."""
    a = cfg.pref_coef * side * y
    return a, float((a * err).sum()) / len(y)


def anchored_terms(y: torch.Tensor, side: torch.Tensor, delta: torch.Tensor, cfg: ObjectiveConfig,
                   err: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Bounded, anchored at θ*:  a_i = pref_coef · s_i · y_i · σ(β y_i Δ_i);
    value (1/B) Σ_i pref_coef · s_i · softplus(β y_i Δ_i) / β. With ``anchored_on="negative"``
    likes keep the linear a_i = pref_coef · s_i · y_i (value pref_coef · s_i · y_i · Δ_i)."""
    a = torch.zeros_like(y)
    value = 0.0
    for i in torch.nonzero(y).flatten().tolist():
        if cfg.anchored_on == "both" or y[i] < 0:
            z = cfg.beta * y[i] * delta[i]
            a[i] = cfg.pref_coef * side[i] * y[i] * torch.sigmoid(z)
            value += cfg.pref_coef * float(side[i] * torch.nn.functional.softplus(z)) / max(cfg.beta, 1e-12)
        else:
            a[i] = cfg.pref_coef * side[i] * y[i]
            value += cfg.pref_coef * float(side[i] * y[i] * delta[i])
    return a, value / len(y)


def dpo_terms(y: torch.Tensor, side: torch.Tensor, delta: torch.Tensor, cfg: ObjectiveConfig,
              err: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Over every (liked w, disliked l) pair, weighted by |y_w · y_l|:
    value mean_pairs pref_coef · softplus(β (Δ_w − Δ_l)) / β;  a_w += B · pref_coef · σ(β (Δ_w − Δ_l)) / #pairs,
    a_l −= the same (the surrogate is (1/B) Σ_i a_i Δ_i)."""
    b = len(y)
    a = torch.zeros_like(y)
    liked = torch.nonzero(y > 0).flatten().tolist()
    disliked = torch.nonzero(y < 0).flatten().tolist()
    npairs = len(liked) * len(disliked)
    value = 0.0
    for wi in liked:
        for li in disliked:
            z = cfg.beta * (delta[wi] - delta[li])
            s = float(torch.sigmoid(z)) * float(y[wi] * -y[li])
            a[wi] += cfg.pref_coef * s / npairs * b
            a[li] -= cfg.pref_coef * s / npairs * b
            value += cfg.pref_coef * float(torch.nn.functional.softplus(z)) * float(y[wi] * -y[li]) / max(
                cfg.beta, 1e-12)
    return a, value / max(npairs, 1)


LOSS_TERMS = {"linear": linear_terms, "anchored": anchored_terms, "dpo": dpo_terms}
NEEDS_DELTA = ("anchored", "dpo")  # a_i depends on Δ_i: the θ-errors are needed before the backward pass
PAIRWISE = ("dpo",)  # a_i couples a step's liked and disliked images: nothing to learn without both


def preference_terms(pairs: Pairs, y: torch.Tensor, side: torch.Tensor, err_theta: torch.Tensor,
                     err_base: torch.Tensor, cfg: ObjectiveConfig) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The per-image coefficients a_i [B], Δ_i [B] and the preference loss value from the per-pair
    errors ‖ε_θ − ε‖² (``err_theta`` [N]) and ‖ε_θ* − ε‖² (``err_base`` [N])."""
    b = len(y)
    delta = per_image(pairs, err_theta - err_base, b)
    a, value = LOSS_TERMS[cfg.loss](y, side, delta, cfg, per_image(pairs, err_theta, b))
    return a, delta, value
