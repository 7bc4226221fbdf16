"""Active queries: which of a pool of generated candidates to show the person.

Labels cost a person's attention; candidates cost a few seconds of generation. So the host samples a
pool of P ≥ B candidates and shows the B whose answers should teach the most:

- ``random``    B of the pool uniformly (what showing a plain batch does);
- ``diverse``   farthest-point cover of the pool in feature space: each pick maximises its distance
                to those already picked, so near-duplicates are not asked twice;
- ``uncertain`` the candidates whose predicted answer is closest to undecided: a kernel-weighted
                mean of the labels already given to nearby images, ŷ(x) = Σ_j k(x, x_j) y_j / Σ_j k(x, x_j),
                with k(x, x') = exp(−‖f(x) − f(x')‖² / h²), h the median distance; |ŷ| small = unsure.
                Ties (and candidates far from every label, ŷ ≈ 0) are broken by diversity: the B shown
                cover the ``UNSURE_SHORTLIST`` × B most unsure (from a pool that size, the whole pool);
- ``mixed``     ``diverse`` while few labels exist, then half ``uncertain`` and half ``diverse``.

Features f are cheap and host-agnostic: the latent itself, average-pooled to at most 8×8 per
channel and standardised, so a 64×64×4 SD latent and a 16×16 digit compare the same way. The
unshown candidates are dropped. Pure torch; deterministic for a generator.
"""
from __future__ import annotations

from typing import Optional

import torch

from .errors import PapaError
from .session import Session

STRATEGIES = ("random", "diverse", "uncertain", "mixed")
DEFAULT_STRATEGY = "uncertain"  # what --select and PAPA Generate Batch use unless told: fewest labels on both
# tasks and the only one that kept the quality guards at every checkpoint (docs/benchmarks.md §6)
MIXED_SWITCH_LABELS = 20  # ``mixed`` turns to uncertainty once this many labels exist
SHOWN_PER_ROUND = 4  # images a round shows unless told (PAPA Generate Batch): rounds of 4 need a third of the
# labels of rounds of 10, each update moving the model as far (docs/benchmarks.md §6.1)
UNSURE_SHORTLIST = 2  # ``uncertain`` covers this many times the batch of the most unsure candidates: no two
# near-duplicates of one undecided image (from a pool of this size, a cover of the whole pool; §7.19)
POOL_FACTOR = 4  # candidates per shown image where a pool is asked for without a size (the measured one, §6)


def pool_size(batch: int, pool: Optional[int] = None) -> int:
    """Candidates per round for a batch of ``batch`` shown images: ``pool``, or ``POOL_FACTOR`` × the batch
    when it is not given. A batch below 1 or a pool below the batch is refused, saying what to give."""
    n = pool or POOL_FACTOR * batch
    if batch < 1 or n < batch:
        raise PapaError(f"a pool of {n} candidates cannot fill a batch of {batch}: the batch must be at least 1 and "
                        f"the pool at least the batch; leave the pool out for {POOL_FACTOR} × the batch")
    return n


def features(latents: torch.Tensor, side: int = 8) -> torch.Tensor:
    """[N, C, H, W] latents → [N, D] standardised features (each channel average-pooled to ≤ side×side)."""
    x = latents.detach().float().cpu()
    if x.shape[-1] > side or x.shape[-2] > side:
        x = torch.nn.functional.adaptive_avg_pool2d(x, (min(side, x.shape[-2]), min(side, x.shape[-1])))
    f = x.flatten(1)
    return (f - f.mean(0)) / (f.std(0) + 1e-6) if len(f) > 1 else f


def farthest_points(f: torch.Tensor, k: int, first: int, chosen: Optional[list[int]] = None) -> list[int]:
    """Greedy farthest-point cover: start from ``chosen`` (or ``first``), add the point farthest from
    all chosen so far until there are ``k``."""
    chosen = list(chosen) if chosen else [first]
    d = torch.cdist(f, f[chosen]).min(1).values
    while len(chosen) < k:
        d[chosen] = -1.0
        nxt = int(torch.argmax(d))
        chosen.append(nxt)
        d = torch.minimum(d, torch.cdist(f, f[nxt:nxt + 1]).squeeze(1))
    return chosen


def predicted_answer(f: torch.Tensor, labelled: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
    """ŷ [N] ∈ [-1, 1] for features ``f`` [N, D] from earlier images' features [M, D] and answers [M]
    (Nadaraya–Watson kernel regression; bandwidth the median pairwise distance)."""
    d2 = torch.cdist(f, labelled).pow(2)
    h2 = d2.median().clamp_min(1e-6)
    w = torch.exp(-d2 / h2)
    return (w @ answers) / w.sum(1).clamp_min(1e-12)


def select(latents: torch.Tensor, k: int, strategy: str = "random", generator: Optional[torch.Generator] = None,
           labelled: Optional[torch.Tensor] = None, answers: Optional[torch.Tensor] = None) -> list[int]:
    """Indices of the ``k`` of ``latents`` [P, C, H, W] to show, in the order chosen.

    ``labelled`` [M, C, H, W] and ``answers`` [M] (values in [-1, 1], 0 = neutral) are the images
    already answered; ``uncertain`` and ``mixed`` fall back to ``diverse`` without them.
    """
    p = latents.shape[0]
    if strategy not in STRATEGIES:
        raise PapaError(f"selection must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if not 1 <= k <= p:
        raise PapaError(f"cannot show {k} of a pool of {p} candidates: the pool must hold at least the batch")
    order = torch.randperm(p, generator=generator).tolist()
    if strategy == "random" or k == p:
        return order[:k]
    n_labels = 0 if answers is None else int((answers != 0).sum())
    feats = features(torch.cat([latents, labelled]) if n_labels else latents)
    f = feats[:p]
    if n_labels == 0 or strategy == "diverse" or (strategy == "mixed" and n_labels < MIXED_SWITCH_LABELS):
        return farthest_points(f, k, order[0])
    keep = answers != 0
    y_hat = predicted_answer(f, feats[p:][keep], answers[keep].float())
    if strategy == "mixed":  # half the most unsure, the rest covering the pool
        unsure = torch.argsort(y_hat.abs(), stable=True)[:k // 2].tolist()
        return farthest_points(f, k, unsure[0], chosen=unsure) if unsure else farthest_points(f, k, order[0])
    shortlist = torch.argsort(y_hat.abs(), stable=True)[:min(p, UNSURE_SHORTLIST * k)]
    return [int(shortlist[i]) for i in farthest_points(f[shortlist], k, 0)]


def select_for(session: Session, candidates: torch.Tensor, k: int, strategy: str,
               generator: Optional[torch.Generator] = None) -> list[int]:
    """``select`` with the session's answered images (those of the candidates' latent shape) as the labels."""
    done = [r for r in session.labelled_rounds() if r.x0.shape[1:] == candidates.shape[1:]]
    labelled = torch.cat([r.x0 for r in done]) if done else None
    answers = torch.tensor([v for r in done for v in r.feedback]) if done else None
    return select(candidates, k, strategy, generator, labelled, answers)
