"""One PAPA update: the LoRA step(s) a round of feedback triggers.

``update(session, denoiser, config)`` trains the session's LoRA on its new feedback (plus, with
replay, the feedback of earlier rounds: the paper's growing liked / disliked sets), writes the new
LoRA and optimizer state into the session and returns what it did. A NaN or inf anywhere restores
the pre-update weights and raises ``NonFiniteError``; the session is left untouched.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Mapping, Optional

import torch

from .denoiser import Denoiser
from .errors import NonFiniteError, NoPairs, PapaError
from .memory import NoProbe, PassSizer, is_out_of_memory
from .gradients import accumulate_gradients
from .objective import OBJECTIVE_PRESETS, PAIRWISE, ObjectiveConfig, pick_preset, without_retired
from .session import Round, Session, optimizer_state_from_tensors, optimizer_state_to_tensors
from .trust_region import (DEFAULT_STRENGTH, STRENGTHS, FittedStep, TrustRegion, answered_share, fit_step, make_probe,
                           relative_change)

OPTIMIZERS: dict[str, type] = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
AUTOCAST = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}

ProgressCallback = Callable[[int, int, dict], None]
"""progress(step, total_steps, info) after each optimizer step; info has loss and grad_norm."""


# Fields older versions had, with the one value they were ever set to: no weight decay (the model
# term, not a decay towards ΔW = 0, keeps the LoRA near the base), and replay of every earlier round.
RETIRED = {"weight_decay": 0.0, "replay_rounds": 0}


@dataclass(frozen=True)
class UpdateConfig:
    """How a round of feedback updates the LoRA.

    Attributes:
        objective: the loss (``objective.ObjectiveConfig``).
        optimizer: ``adam`` or ``adamw``.
        lr: learning rate of the LoRA parameters (with ``strength``, it only shapes the direction).
        strength: the scale-free step (``trust_region``): the relative change of the predicted noise
            ρ an update makes on its own images, at the first round (decaying like the lr with
            ``lr_decay_rounds``); the optimizer's displacement is scaled to it. None = the raw lr step.
            ``trust_region.STRENGTHS`` names gentle / normal / strong.
        steps: optimizer steps per update; None = one pass over the images (with ``images_per_step``).
        images_per_step: images per optimizer step, drawn from the new round plus replay (None = all of
            them every step). Bounds the cost of a round as the replayed history grows.
        shuffle: draw the images of each step at random (False: in order, as the reference).
        replay: train on earlier rounds' feedback too: ``none`` or ``all``.
        newest_every_step: every step trains on all of the new round's labelled images, the rest of
            ``images_per_step`` drawn from the replayed ones (False: all drawn from the whole pool, so
            the new round's share shrinks as the history grows).
        lr_decay_rounds: h > 0 scales the learning rate by h / (h + n), n = rounds already trained on
            (0 = constant). The later rounds refine rather than move the LoRA.
        grad_clip: max global L2 norm of the LoRA gradient (None = no clipping).
        autocast: ``auto`` (bf16 where the device computes it natively: CUDA with bf16, or a CPU with
            AVX512-BF16 or AMX; else off), ``bf16``, ``fp16`` or ``none``. The digits benchmark
            aligns the same in bf16 as in fp32 (docs/benchmarks.md §3.5).
        seed: seeds timesteps, noise and image order (combined with the session version).
        liked_round_step: with ``strength``, the share of the target an update gets when the person
            liked every image of its new rounds; at least half of them 👎 gets the whole target, linear
            between (``trust_region.answered_share``). None: every update the whole target.
    """

    objective: ObjectiveConfig = field(default_factory=lambda: OBJECTIVE_PRESETS["default"])
    optimizer: str = "adamw"
    lr: float = 5e-3
    steps: Optional[int] = 4
    images_per_step: Optional[int] = 12
    shuffle: bool = True
    replay: str = "all"
    newest_every_step: bool = False
    lr_decay_rounds: int = 20
    grad_clip: Optional[float] = 1.0
    autocast: str = "auto"
    seed: int = 0
    strength: Optional[float] = None
    liked_round_step: Optional[float] = None

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise PapaError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {self.optimizer!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise PapaError(f"lr must be a positive number, got {self.lr!r}")
        if self.steps is not None and (not isinstance(self.steps, int) or self.steps < 1):
            raise PapaError(f"steps must be ≥ 1 (or None for one pass), got {self.steps!r}")
        if self.images_per_step is not None and (not isinstance(self.images_per_step, int)
                                                 or self.images_per_step < 1):
            raise PapaError(f"images_per_step must be ≥ 1 or None, got {self.images_per_step!r}")
        if self.replay not in ("none", "all"):
            raise PapaError(f"replay must be 'none' or 'all', got {self.replay!r}")
        if self.autocast not in ("auto", *AUTOCAST):
            raise PapaError(f"autocast must be one of auto/bf16/fp16/none, got {self.autocast!r}")
        if not isinstance(self.newest_every_step, bool):
            raise PapaError(f"newest_every_step must be true or false, got {self.newest_every_step!r}")
        if not isinstance(self.lr_decay_rounds, int) or self.lr_decay_rounds < 0:
            raise PapaError(f"lr_decay_rounds must be an integer ≥ 0 (0 = constant lr), got {self.lr_decay_rounds!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise PapaError(f"grad_clip must be positive or None, got {self.grad_clip!r}")
        if self.strength is not None and not (isinstance(self.strength, (int, float)) and 0 < self.strength <= 1):
            raise PapaError(f"strength must be a relative change in (0, 1] (normal: {STRENGTHS[DEFAULT_STRENGTH]}) "
                            f"or None for the raw lr step, got {self.strength!r}")
        if self.liked_round_step is not None and not (
                isinstance(self.liked_round_step, (int, float)) and 0 < self.liked_round_step <= 1):
            raise PapaError("liked_round_step must be a share of the step in (0, 1] (the 'style' preset: 0.25) or "
                            f"None for a whole step on every update, got {self.liked_round_step!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["liked_round_step"] is None:  # as stored before the field existed: the same update
            del d["liked_round_step"]
        d["objective"] = self.objective.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> "UpdateConfig":
        d = without_retired(d, RETIRED)
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise PapaError(f"unknown update settings {unknown}; known: {sorted(cls.__dataclass_fields__)}")
        if "objective" in d and not isinstance(d["objective"], ObjectiveConfig):
            d["objective"] = ObjectiveConfig.from_dict(d["objective"])
        return cls(**d)


UPDATE_PRESETS: dict[str, UpdateConfig] = {
    # The reference loop moved to LoRA: one Adam step per image, in order, this round only.
    # What had to change: lr (the reference's 1e-5 is for full fine-tuning; a zero-initialised LoRA
    # needs a larger step to move at all).
    "reference": UpdateConfig(objective=OBJECTIVE_PRESETS["reference"], optimizer="adam", lr=1e-4, steps=None,
                              images_per_step=1, shuffle=False, replay="none", grad_clip=None, lr_decay_rounds=0),
    "epapa": UpdateConfig(objective=OBJECTIVE_PRESETS["epapa"], optimizer="adam", lr=1e-4, steps=None,
                          images_per_step=1, shuffle=False, replay="none", grad_clip=None, lr_decay_rounds=0),
    # Baselines: the budget of the m = 16 default they were compared with (4 steps of 12 images, 16
    # timesteps each, replay), at the constant lr they were measured with.
    "liked_only": UpdateConfig(objective=OBJECTIVE_PRESETS["liked_only"], lr_decay_rounds=0),
    "dpo": UpdateConfig(objective=OBJECTIVE_PRESETS["dpo"], lr_decay_rounds=0),
    # The project's default (docs/benchmarks.md §3.2–3.4, §7): the optimizer's steps (AdamW, lr 5e-3)
    # give the direction, the trust region the size: a "normal" relative change of ε̂ per update,
    # decaying as 20 / (20 + rounds trained), the same at every model size.
    "default": UpdateConfig(strength=STRENGTHS[DEFAULT_STRENGTH]),
    # For a preference on how every image looks (stroke weight, colour, finish) rather than on what it
    # shows: the preference on pairs (objective "style"), and a quarter of the step on rounds the person
    # liked throughout. Held the bold-strokes task at 0.91–0.98 on the mean of six seeds where the default
    # swings (lowest seed 0.83 from round 10), and narrows the variety within a preference of several
    # kinds of subject (docs/benchmarks.md §7.8, §7.9).
    "style": UpdateConfig(objective=OBJECTIVE_PRESETS["style"], strength=STRENGTHS[DEFAULT_STRENGTH],
                          liked_round_step=0.25),
}


# What the person teaches, as the preset for it: what the images show (the default) or how every image
# looks (style). Both hosts offer these two; ComfyUI's PAPA Update offers the baselines too.
TEACHING_PRESETS = ("default", "style")


def update_preset(name: str, **overrides) -> UpdateConfig:
    """A preset with fields replaced; ``objective`` may be a dict of objective fields to replace."""
    obj = overrides.get("objective")
    if isinstance(obj, Mapping):
        overrides["objective"] = replace(pick_preset(UPDATE_PRESETS, "update", name).objective, **obj)
    return pick_preset(UPDATE_PRESETS, "update", name, **overrides)


@dataclass
class UpdateStats:
    """What one update did (also stored in the session's rounds)."""

    rounds: list[int]
    images: int
    steps: int
    loss: list[float]
    grad_norm: list[float]
    timesteps: int  # (image, t) pairs evaluated with gradient, all steps together
    forward_passes: int
    seconds: float
    lr: float
    objective: str
    pairs_per_pass: int = 0  # at the end of the update (the sizer may have changed it)
    checkpointing: bool = False
    oom_retries: int = 0  # steps retried with a smaller pass after running out of memory
    peak_bytes: Optional[int] = None  # the device's peak during the update's passes (None: not measured)
    memory_notes: list = field(default_factory=list)
    change: Optional[float] = None  # ρ, the relative change of ε̂ on the round's images (with ``strength``)
    change_target: Optional[float] = None  # this round's τ
    step_scale: Optional[float] = None  # s: the step taken / the optimizer's

    def to_dict(self) -> dict:
        return asdict(self)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` runs bf16 matrix products in hardware (so autocast to bf16 pays)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        # torch exposes these probes privately; an older or newer torch without them means "no".
        probes = (getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
        return any(probe is not None and bool(probe()) for probe in probes)
    return False


def resolve_autocast(name: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype an ``UpdateConfig.autocast`` setting means on ``device`` (None = off)."""
    if name == "auto":
        return torch.bfloat16 if native_bf16(device) else None
    return AUTOCAST[name]


def training_set(session: Session, cfg: UpdateConfig) -> tuple[list[Round], list[tuple[Round, int]]]:
    """The rounds this update consumes, and the (round, image) pairs it trains on."""
    new = session.untrained_rounds()
    if not new:
        raise PapaError(f"session {session.name!r} has no new feedback to learn from: record feedback on a "
                        "generated batch first")
    pool_rounds = list(new)
    if cfg.replay == "all":
        old = [r for r in session.labelled_rounds() if r.update is not None]
        pool_rounds = old + pool_rounds
    items = [(r, i) for r in pool_rounds for i, v in enumerate(r.feedback) if v != 0]
    if items and cfg.objective.loss in PAIRWISE:  # (no items: every new image neutral, see ``update``)
        check_pairs(items, cfg.objective)
    return new, items


def check_pairs(items: list[tuple[Round, int]], objective: ObjectiveConfig) -> None:
    """A pairwise objective learns nothing until the images it trains on hold a like and a dislike: say so
    before an update that would only pull the LoRA towards the base (the rounds stay untrained)."""
    ys = [r.feedback[i] for r, i in items]
    liked, disliked = any(y > 0 for y in ys), any(y < 0 for y in ys) and not objective.positive_only
    if not (liked and disliked):
        missing, mark = ("liked", "👍") if not liked else ("disliked", "👎")
        raise NoPairs(f"this preset learns from pairs of a liked and a disliked image, and the images it trains on "
                      f"hold no {missing} one yet: mark at least one image {mark} in this or a later batch (the "
                      "feedback given so far is kept), or use the default preset, which learns from likes or "
                      "dislikes alone")


def stack_conditioning(parts: list[torch.Tensor]) -> torch.Tensor:
    """Stack per-image conditioning; token sequences of different lengths ([L_i, D]) are repeated
    to their least common multiple first.

    Repeating a whole key/value sequence k times leaves cross-attention's output unchanged (each
    softmax weight is split evenly over the k copies), which is how ComfyUI batches prompts of
    different lengths, so replaying rounds with longer or shorter prompts is exact.
    """
    shapes = {tuple(p.shape) for p in parts}
    if len(shapes) == 1:
        return torch.stack(parts)
    if not all(p.ndim == 2 for p in parts) or len({p.shape[1] for p in parts}) != 1:
        raise PapaError(f"conditioning shapes {sorted(shapes)} cannot be batched together; set replay to 'none' "
                        "or start a new session for this prompt")
    length = math.lcm(*(p.shape[0] for p in parts))
    return torch.stack([p.repeat(length // p.shape[0], 1) for p in parts])


def _stack(items: list[tuple[Round, int]]):
    x0 = torch.stack([r.x0[i] for r, i in items])
    keys = sorted(items[0][0].cond)
    for r, _ in items:
        if sorted(r.cond) != keys:
            raise PapaError("rounds with different conditioning kinds cannot be trained together; "
                            "set replay to 'none' or start a new session")
    cond = {k: stack_conditioning([r.cond[k][i] for r, i in items]) for k in keys}
    y = torch.tensor([r.feedback[i] for r, i in items], dtype=torch.float32)
    return x0, cond, y


def decay(config: UpdateConfig, session: Session) -> float:
    """h / (h + n) for the session's next update: n updates done, h = ``lr_decay_rounds`` (0: 1)."""
    h = config.lr_decay_rounds
    return 1.0 if h == 0 else h / (h + session.update_count)


def effective_lr(config: UpdateConfig, session: Session) -> float:
    """The learning rate of the session's next update (``lr_decay_rounds``)."""
    return config.lr * decay(config, session)


def _probe(denoiser: Denoiser, config: UpdateConfig, session: Session, new_rounds: list[Round],
           items: list[tuple[Round, int]], chunk: int):
    """The trust region's probe on the new rounds' labelled images (None without ``strength``); on the
    replayed ones when every new image is neutral."""
    if config.strength is None:
        return None
    region = TrustRegion()
    new = [(r, i) for r in new_rounds for i, v in enumerate(r.feedback) if v != 0]
    items = (new or items)[:region.probe_images]
    x0, cond, _ = _stack(items)
    # its own generator: the training draws are the same with and without the trust region
    g = torch.Generator().manual_seed(config.seed * 1_000_003 + session.version + 7)
    return make_probe(denoiser, x0, cond, config.objective.k, region.probe_timesteps, g, chunk)


def _fit_to_strength(denoiser: Denoiser, config: UpdateConfig, session: Session, new_rounds: list[Round],
                     probe, params: list, start: list[torch.Tensor], chunk: int) -> Optional[FittedStep]:
    """Scale the update's displacement so that ρ meets this round's target (``trust_region``): the
    strength, decayed, and with ``liked_round_step`` times the share the new rounds' answers ask for."""
    if probe is None:
        return None
    target = config.strength * decay(config, session)
    if config.liked_round_step is not None:
        target *= answered_share([y for r in new_rounds for y in r.feedback], config.liked_round_step)
    fitted = fit_step(params, start, lambda: relative_change(denoiser, probe, chunk), target)
    if not math.isfinite(fitted.change):
        raise NonFiniteError("the fitted step made the predictions NaN or inf; the LoRA was restored to its state "
                             "before this update. Lower the learning strength, or undo the last update")
    return fitted


def _cyclic_taker(m: int, shuffle: bool, g: torch.Generator) -> Callable[[int], list[int]]:
    """take(k): the next k of m indices from a cursor over a permutation, reshuffled after each full pass."""
    order = torch.randperm(m, generator=g) if shuffle else torch.arange(m)
    cursor = 0

    def take(k: int) -> list[int]:
        nonlocal order, cursor
        chosen = [int(order[(cursor + j) % m]) for j in range(k)]
        cursor += k
        if cursor >= m and shuffle:
            order, cursor = torch.randperm(m, generator=g), 0
        return chosen

    return take


def _step_choices(n: int, n_new: int, per_step: int, shuffle: bool, g: torch.Generator):
    """Yield, per optimizer step, the indices into the training items (the ``n_new`` newest last).

    n_new == 0: a cursor walks a permutation of all items (reshuffled after each full pass). n_new > 0:
    every step takes the new items (a random subset if they alone exceed ``per_step``) and fills up
    from a cursor over the older ones.
    """
    if per_step == n:
        while True:
            yield list(range(n))
    if n_new == 0:
        take = _cyclic_taker(n, shuffle, g)
        while True:
            yield take(per_step)
    n_old = n - n_new
    new = list(range(n_old, n))
    take_old = _cyclic_taker(n_old, shuffle, g)
    while True:
        if n_new >= per_step:
            pick = torch.randperm(n_new, generator=g)[:per_step] if shuffle else torch.arange(per_step)
            yield [new[int(j)] for j in pick]
        else:
            yield take_old(per_step - n_new) + new


def _fitted_gradients(denoiser: Denoiser, opt, x0, cond, y, objective: ObjectiveConfig, g: torch.Generator,
                      autocast_dtype, sizer: PassSizer):
    """``accumulate_gradients`` in passes of ``sizer.pairs``; out of memory, the step is retried with the
    same draws (generator state restored) in smaller passes, which gives the same gradient."""
    draws = g.get_state()
    while True:
        opt.zero_grad(set_to_none=True)
        sizer.before_step()
        try:
            with _checkpointing(denoiser, sizer.checkpointing):
                res = accumulate_gradients(denoiser, x0, cond, y, replace(objective, max_batch=sizer.pairs),
                                           generator=g, autocast_dtype=autocast_dtype)
        except Exception as e:  # noqa: BLE001 - only out-of-memory is handled; the rest re-raised
            if not is_out_of_memory(e):
                raise
            why = str(e).splitlines()[0][:200]
        else:
            sizer.after_step()
            return res
        # outside the except block, so the error's frames (and the activations they hold) are gone
        opt.zero_grad(set_to_none=True)
        g.set_state(draws)
        sizer.shrink(why)


def _checkpointing(denoiser: Denoiser, on: bool):
    """The denoiser's gradient checkpointing while ``on`` (denoisers without it run as they are)."""
    cm = getattr(denoiser, "gradient_checkpointing", None)
    return cm(True) if on and cm is not None else contextlib.nullcontext()


def _optimizer(config: UpdateConfig, session: Session, params: list, lr: float) -> torch.optim.Optimizer:
    """The optimizer at ``lr``, resumed from the session's saved state (its moments) when there is one."""
    # weight_decay 0: AdamW's default 0.01 would pull the LoRA towards ΔW = 0 on its own schedule
    kwargs = {"lr": lr, "weight_decay": 0.0} if config.optimizer == "adamw" else {"lr": lr}
    opt = OPTIMIZERS[config.optimizer](params, **kwargs)
    if session.optimizer_state:
        sd = optimizer_state_from_tensors(session.optimizer_state)
        sd["param_groups"][0].update(kwargs)
        try:
            opt.load_state_dict(sd)
        except (ValueError, KeyError) as e:
            raise PapaError(f"the session's optimizer state does not fit its LoRA ({e}); reset the session") from e
    return opt


def update(session: Session, denoiser: Denoiser, config: UpdateConfig = UpdateConfig(),
           progress: Optional[ProgressCallback] = None, memory: Optional[PassSizer] = None) -> UpdateStats:
    """Train the session's LoRA on its new feedback; returns the stats and saves nothing to disk.

    ``memory`` sizes the forward/backward passes (``memory.PassSizer``); by default every pass holds
    up to ``config.objective.max_batch`` pairs. An out-of-memory error retries the step with smaller
    passes (the result does not depend on them). The caller persists the session afterwards
    (``SessionStore.save``).
    """
    sizer = memory or PassSizer.start("fast", NoProbe(), config.objective.max_batch)
    session.check_compatible(denoiser.fingerprint, denoiser.lora_config)
    new_rounds, items = training_set(session, config)
    t_start = time.perf_counter()
    if not items:  # every new image neutral: nothing to learn, but the rounds are consumed
        stats = UpdateStats([r.index for r in new_rounds], 0, 0, [], [], 0, 0, 0.0, config.lr,
                            config.objective.loss)
        session.apply_update(new_rounds, session.lora_state, session.optimizer_state or {}, stats.to_dict())
        return stats

    denoiser.set_lora_state(session.lora_state)
    params = denoiser.lora_parameters()
    lr = effective_lr(config, session)
    opt = _optimizer(config, session, params, lr)
    g = torch.Generator().manual_seed(config.seed * 1_000_003 + session.version)
    n = len(items)
    per_step = n if config.images_per_step is None else min(config.images_per_step, n)
    steps = config.steps if config.steps is not None else math.ceil(n / per_step)
    new_ids = {id(r) for r in new_rounds}
    n_new = sum(1 for r, _ in items if id(r) in new_ids) if config.newest_every_step else 0
    choices = _step_choices(n, n_new, per_step, config.shuffle, g)
    autocast_dtype = resolve_autocast(config.autocast, denoiser.device)

    probe = _probe(denoiser, config, session, new_rounds, items, sizer.pairs)
    start = [p.detach().clone() for p in params] if probe is not None else []
    losses, norms = [], []
    timesteps = forwards = 0
    try:
        for step in range(steps):
            chosen = next(choices)
            x0, cond, y = _stack([items[j] for j in chosen])
            res = _fitted_gradients(denoiser, opt, x0, cond, y, config.objective, g, autocast_dtype, sizer)
            grads = [p.grad for p in params if p.grad is not None]
            norm = torch.linalg.vector_norm(torch.stack([gr.detach().float().norm() for gr in grads])) if grads \
                else torch.zeros(())
            if not math.isfinite(res.loss) or not torch.isfinite(norm):
                raise NonFiniteError(
                    f"update step {step + 1}/{steps} produced a non-finite {'loss' if not math.isfinite(res.loss) else 'gradient'}"
                    "; the LoRA was restored to its state before this update. Lower the learning rate or the "
                    "coefficients, or undo the last update")
            if config.grad_clip is not None and grads:
                torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            opt.step()
            if not all(torch.isfinite(p).all() for p in params):
                raise NonFiniteError("the LoRA weights became NaN or inf; they were restored to their state before "
                                     "this update. Lower the learning rate")
            losses.append(res.loss)
            norms.append(float(norm))
            timesteps += res.timesteps
            forwards += res.forward_passes
            if progress is not None:
                progress(step + 1, steps, {"loss": res.loss, "grad_norm": float(norm)})
        fitted = _fit_to_strength(denoiser, config, session, new_rounds, probe, params, start, sizer.pairs)
    except BaseException:
        denoiser.set_lora_state(session.lora_state)
        raise
    stats = UpdateStats(rounds=[r.index for r in new_rounds], images=n, steps=steps, loss=losses, grad_norm=norms,
                        timesteps=timesteps, forward_passes=forwards, seconds=time.perf_counter() - t_start,
                        lr=lr, objective=config.objective.loss, pairs_per_pass=sizer.pairs,
                        checkpointing=sizer.checkpointing, oom_retries=sizer.oom_retries,
                        peak_bytes=sizer.peak_bytes, memory_notes=list(sizer.notes),
                        **({} if fitted is None else {"change": fitted.change, "change_target": fitted.target,
                                                      "step_scale": fitted.scale}))
    session.apply_update(new_rounds, denoiser.get_lora_state(), optimizer_state_to_tensors(opt.state_dict()),
                         stats.to_dict())
    return stats
