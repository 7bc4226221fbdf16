"""The online loop on the embedded digits model: generate → feedback → PAPA update → repeat.

Used by the demo (``python -m papa_core demo``), the alignment benchmark and the tests.
"""
from __future__ import annotations

import copy
import logging
import math
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import torch

from ..denoiser import DiffusersDenoiser
from ..errors import NoPairs, SessionMismatch
from ..lora import LoraConfig
from ..sampling import sample
from ..selection import select_for
from ..session import Session, SessionStore
from ..update import UpdateConfig, update, update_preset
from .metrics import classify, ink_mass, nearest_real_distance, normalised_entropy
from .models import digits_schedule, load_classifier, load_unet
from .user import Answering, BoldPreference, ClassPreference, Preference, binary_feedback

log = logging.getLogger(__name__)

FeedbackFn = Callable[[torch.Tensor, int], list[float]]
"""feedback_fn(images [B,1,16,16] in [-1,1], round_index) -> B values in [-1, 1]"""


@dataclass
class LoopConfig:
    """The online loop's settings (defaults: the demo's, ≈ 4–5 minutes on 2 CPU cores).

    Attributes:
        rounds: feedback rounds.
        batch_size: images shown per round (the paper: 10).
        eval_size: fixed evaluation batch (same noise every round) for the preferred fraction.
        eval_every: evaluate every n rounds (the first and last always).
        sampling_steps: denoising steps per image (strided over the 1000 training steps).
        eta: 0 = DDIM, 1 = ancestral.
        preset: update preset (``default``, ``reference``, ``epapa``, ``liked_only``, ``dpo``).
        task: ``classes`` (likes 1/4/7/9) or ``bold`` (likes heavy strokes).
        lora_rank, lora_alpha, lora_targets: the adapter.
        seed: everything random derives from it.
        update_overrides: fields replaced in the update preset (e.g. {"lr": 3e-3}).
        pool_size: candidates generated per round, of which ``batch_size`` are shown (0: just the batch).
        selection: how the shown ones are chosen from the pool (``selection.STRATEGIES``).
        label_noise: share of the simulated person's answers flipped (``user.Answering.flip``).
        skip_unsure: the simulated person answers 0 where |score| is below this (``user.Answering``).
        base_below_k: sample t < k with the base model (the paper's EPAPA sampler). Off by default:
            a LoRA file acts at every step in every host, so the loop samples as they do (the tables
            of docs/benchmarks.md before §7.17 were made with it on).
    """

    rounds: int = 20
    batch_size: int = 10
    eval_size: int = 64
    eval_every: int = 1
    sampling_steps: int = 40
    eta: float = 0.0
    preset: str = "default"
    task: str = "classes"
    lora_rank: int = 8
    lora_alpha: float = 8.0
    lora_targets: str = "attention+conv"
    seed: int = 0
    update_overrides: dict = field(default_factory=dict)
    eval_rounds: Optional[tuple[int, ...]] = None  # evaluate after exactly these rounds (overrides eval_every)
    device: str = "cpu"
    pool_size: int = 0
    selection: str = "random"
    label_noise: float = 0.0
    skip_unsure: float = 0.0
    base_below_k: bool = False

    def evaluates_after(self, r: int) -> bool:
        if self.eval_rounds is not None:
            return r in self.eval_rounds
        return r % self.eval_every == 0 or r == self.rounds

    def update_config(self) -> UpdateConfig:
        return update_preset(self.preset, **{"seed": self.seed, **self.update_overrides})


@dataclass
class Checkpoint:
    round: int  # rounds of feedback consumed so far
    labels: int
    preferred: float
    confident: float
    nearest_real: float
    diversity: float
    seconds_update: float  # mean seconds per update so far
    timesteps: int  # mean (image, t) pairs with gradient per update so far
    # which digits all the samples show, as normalised entropy over the ten (1: each equally often):
    # on the bold task, whether teaching a look kept the subjects (None in runs stored before it)
    digits_variety: Optional[float] = None


class Stopped(Exception):
    """Sampling was asked to stop (``DigitsWorld.generate``'s ``stop`` event)."""


def _check(stop: threading.Event) -> None:
    if stop.is_set():
        raise Stopped


class DigitsWorld:
    """The embedded model, its LoRA, the simulated person and the fixed evaluation noise."""

    def __init__(self, cfg: LoopConfig) -> None:
        self.cfg = cfg
        self.query_seconds = 0.0  # generating (and choosing) the images shown, all rounds together
        device = torch.device(cfg.device)
        self.device = device
        self.schedule = digits_schedule()
        self.denoiser = DiffusersDenoiser(load_unet(device), self.schedule,
                                          LoraConfig(rank=cfg.lora_rank, alpha=cfg.lora_alpha,
                                                     targets=cfg.lora_targets, init_seed=cfg.seed))
        self.classifier = load_classifier(device)
        self.update_config = cfg.update_config()
        g = torch.Generator().manual_seed(10_000 + cfg.seed)
        self.eval_noise = torch.randn((cfg.eval_size, 1, 16, 16), generator=g).to(device)
        self.switch_k = self.update_config.objective.k if cfg.base_below_k else 0
        if cfg.task == "classes":
            self.preference: Preference = ClassPreference(self.classifier)
        elif cfg.task == "bold":
            base = self.generate(self.eval_noise)
            self.preference = BoldPreference(threshold=float(ink_mass(base).quantile(0.7)))
        else:
            raise ValueError(f"task must be 'classes' or 'bold', got {cfg.task!r}")

    def generate(self, noise: torch.Tensor, lora: bool = True, stop: Optional[threading.Event] = None) -> torch.Tensor:
        """Images [B, 1, 16, 16] from ``noise`` with the session's LoRA (``lora=False``: the base model).
        Raises ``Stopped`` at the next sampling step once ``stop`` is set."""
        d = self.denoiser
        with torch.no_grad():
            return sample(lambda x, t: d.eps(x, t, {}, lora=lora), self.schedule, noise,
                          num_steps=self.cfg.sampling_steps, eta=self.cfg.eta,
                          generator=None if self.cfg.eta == 0 else
                          torch.Generator(noise.device).manual_seed(int(noise[0, 0, 0, 0].abs() * 1e6)),
                          eps_fn_low=(lambda x, t: d.eps(x, t, {}, lora=False)) if self.switch_k else None,
                          switch_k=self.switch_k, callback=None if stop is None else lambda i, n: _check(stop))

    def query(self, session: Session, r: int) -> tuple[list[int], torch.Tensor]:
        """Round ``r``'s images to show and their seeds: the batch itself, or (``pool_size``) the
        ``batch_size`` that ``selection`` picks from a pool of candidates."""
        cfg = self.cfg
        n = max(cfg.pool_size, cfg.batch_size)
        seeds = [cfg.seed * 1_000_000 + r * 1000 + i for i in range(n)]
        t0 = time.perf_counter()
        imgs = self.generate(self.noise_for(seeds))
        if n > cfg.batch_size:
            picks = select_for(session, imgs, cfg.batch_size, cfg.selection, torch.Generator().manual_seed(seeds[0]))
            seeds, imgs = [seeds[i] for i in picks], imgs[picks]
        self.query_seconds += time.perf_counter() - t0
        return seeds, imgs

    def noise_for(self, seeds: list[int]) -> torch.Tensor:
        """Each image's starting noise comes from its own seed, so one image can be regenerated alone."""
        return torch.cat([torch.randn((1, 1, 16, 16), generator=torch.Generator().manual_seed(s))
                          for s in seeds]).to(self.device)

    def preferred_share(self, lora: bool = True, half_width: float = 0.03, max_samples: int = 1024,
                        chunk: int = 128, stop: Optional[threading.Event] = None) -> tuple[float, int]:
        """The preferred fraction p of fresh samples (their own noise, seeded apart from the evaluation
        batch and the rounds), drawn ``chunk`` at a time until the 95 % interval 1.96·√(p(1−p)/n) is
        within ``half_width`` or ``max_samples`` are drawn. Returns (p, n); ``stop``: as ``generate``."""
        g = torch.Generator().manual_seed(20_000 + self.cfg.seed)
        liked: list[torch.Tensor] = []
        n = 0
        while n < max_samples:
            noise = torch.randn((min(chunk, max_samples - n), 1, 16, 16), generator=g).to(self.device)
            liked.append(self.preference.liked(self.generate(noise, lora=lora, stop=stop)).cpu())
            n += len(noise)
            p = float(torch.cat(liked).float().mean())
            if 1.96 * math.sqrt(max(p * (1 - p), 1e-12) / n) <= half_width:
                break
        return float(torch.cat(liked).float().mean()), n

    def base_copy(self) -> "DigitsWorld":
        """This world with a copy of its own denoiser (the LoRA as it is now), so that another thread can
        measure the base model (``lora=False``) while this one trains; the rest is read-only and shared."""
        other = copy.copy(self)
        other.denoiser = copy.deepcopy(self.denoiser)
        return other

    def evaluate(self, round_index: int, labels: int, seconds: float, timesteps: int) -> Checkpoint:
        imgs = self.generate(self.eval_noise)
        liked = self.preference.liked(imgs)
        pred, conf = classify(self.classifier, imgs)
        if self.cfg.task == "classes":  # entropy over the preferred classes only
            sub = torch.tensor([self.preference.classes.index(int(c)) for c in pred[liked]], dtype=torch.long)
            diversity = normalised_entropy(sub, len(self.preference.classes))
        else:
            diversity = float(ink_mass(imgs).std())  # the attribute's spread
        return Checkpoint(round=round_index, labels=labels, preferred=float(liked.float().mean()),
                          confident=float((conf > 0.9).float().mean()),
                          nearest_real=float(nearest_real_distance(imgs).mean()), diversity=diversity,
                          seconds_update=seconds, timesteps=timesteps, digits_variety=normalised_entropy(pred, 10))


def run_loop(cfg: LoopConfig, store: SessionStore, session_name: str, feedback_fn: Optional[FeedbackFn] = None,
             on_round: Optional[Callable[[int, torch.Tensor, list[float], Optional[Checkpoint]], None]] = None,
             world: Optional[DigitsWorld] = None) -> tuple[list[Checkpoint], Session, DigitsWorld]:
    """Run ``cfg.rounds`` rounds; returns the evaluation checkpoints (round 0 = base model)."""
    world = world or DigitsWorld(cfg)
    d = world.denoiser
    if store.exists(session_name):
        old = store.get(session_name)
        try:
            old.check_compatible(d.fingerprint, d.lora_config)
        except SessionMismatch as e:  # e.g. a demo folder left by an older version of the digits model
            raise SessionMismatch(f"{e} The folder {store.folder(session_name)} holds a run of another digits "
                                  "model or LoRA setup: delete it, or write this run elsewhere (demo: --out).") from None
        old.reset()
        store.save(old)
        session = old
    else:
        session = store.create(session_name, d.fingerprint, d.lora_config, d.get_lora_state(),
                               meta={"base_model": "papa digits 16x16", "task": cfg.task, "preset": cfg.preset})
    d.set_lora_state(session.lora_state)
    answering = Answering(flip=cfg.label_noise, skip_margin=cfg.skip_unsure)
    feedback_fn = feedback_fn or (lambda imgs, r: binary_feedback(
        world.preference, imgs, answering, torch.Generator().manual_seed(cfg.seed * 1_000_000 + r + 500_000)))
    history = [world.evaluate(0, 0, 0.0, 0)]
    round_seconds: list[float] = []
    round_timesteps: list[int] = []
    for r in range(cfg.rounds):
        seeds, imgs = world.query(session, r)
        session.add_round(imgs, {}, seeds, meta={"sampling_steps": cfg.sampling_steps, "eta": cfg.eta})
        fb = feedback_fn(imgs, r)
        session.record_feedback(fb)
        store.save(session)
        t0 = time.perf_counter()
        try:
            timesteps = update(session, d, world.update_config).timesteps
        except NoPairs:  # a pairwise preset before the first like/dislike pair: the round waits for the next
            timesteps = 0
        seconds = time.perf_counter() - t0
        store.save(session)
        ck = None
        round_seconds.append(seconds)
        round_timesteps.append(timesteps)
        if cfg.evaluates_after(r + 1):
            ck = world.evaluate(r + 1, session.label_count, sum(round_seconds) / len(round_seconds),
                                sum(round_timesteps) // len(round_timesteps))
            history.append(ck)
        if on_round is not None:
            on_round(r, imgs, fb, ck)
    return history, session, world


def checkpoint_dicts(history: list[Checkpoint]) -> list[dict]:
    return [asdict(c) for c in history]
