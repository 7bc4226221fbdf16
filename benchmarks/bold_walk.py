"""What each update of the default does on the bold-strokes task, round by round (docs/benchmarks.md §7.4).

    python -m benchmarks.bold_walk [--seeds 0 1 2] [--rounds 20] [--eval-size 64] [--task bold|classes]

For every round of the default loop (10 labels a round) it measures, on the round's own labelled images:

- the agreement of the update with the answers, on fresh noise at 8 timesteps per image stratified over
  t ≥ k (the trained range), with the ELBO's weights w_t:

      g = Σ_p y_p · w_t · (‖ε_before − ε‖² − ‖ε_after − ε‖²) / Σ_p |y_p| · w_t

  g > 0: the liked images became more likely relative to the disliked ones; g < 0: the update went
  against the answers it was made from;
- the step scale s the trust region chose (at its cap: the optimizer's own step was too small, and was
  enlarged);
- the two terms' gradients at the LoRA before the update (16 timesteps per image, the same draws for
  both): the similarity term's norm over the preference term's, and their cosine; and, from the same
  draws, the mean likelihood gap Δ of the liked and of the disliked images (Δ_i ≈ log p_θ*(x_i) −
  log p_θ(x_i), ``objective``: Δ > 0 for a liked image means the LoRA finds it *less* likely than the
  base model does, so the preference term pulls that image's predictions back towards the base).

Last line: ``updates against the answers <n>/<N>, step at its cap <m>/<N>``.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from dataclasses import replace

import torch

from papa_core.digits.loop import DigitsWorld, LoopConfig, run_loop
from papa_core.gradients import accumulate_gradients
from papa_core.session import SessionStore
from papa_core.trust_region import TrustRegion, make_probe

PROBE_TIMESTEPS = TrustRegion().probe_timesteps  # the trust region's own probe
GRADIENT_TIMESTEPS = 16  # a steadier gradient than the update's 4 per image


def _state(d) -> dict:
    return {k: v.detach().clone() for k, v in d.get_lora_state().items()}


@torch.no_grad()
def agreement(d, before: dict, after: dict, x0: torch.Tensor, y: torch.Tensor, k: int, g: torch.Generator) -> float:
    """g above, for images x0 [B, C, H, W] with answers y [B] (0 = neutral, no weight), on the trust
    region's kind of probe (``PROBE_TIMESTEPS`` per image, stratified over t ≥ k)."""
    d.set_lora_state(before)
    probe = make_probe(d, x0, {}, k, PROBE_TIMESTEPS, g, chunk=x0.shape[0] * PROBE_TIMESTEPS)
    d.set_lora_state(after)
    pred = d.eps(probe.x_t, probe.t, probe.cond).float().cpu()

    def err(eps_hat: torch.Tensor) -> torch.Tensor:
        return ((eps_hat.float().cpu() - probe.noise) ** 2).flatten(1).mean(1).double()

    t = probe.t.cpu()
    yw = y.repeat_interleave(PROBE_TIMESTEPS).double() * d.schedule.elbo_weights()[t]
    return float((yw * (err(probe.eps0) - err(pred))).sum() / yw.abs().sum())


def term_gradients(d, state: dict, x0: torch.Tensor, y: torch.Tensor, objective,
                   seed: int) -> tuple[float, float, list[float]]:
    """(‖∇ similarity‖ / ‖∇ preference‖, cos, Δ per image) at LoRA ``state``; ratio and cos are NaN where
    the similarity gradient is 0 (at the base model: ε_θ = ε_θ*)."""
    grads, delta = [], []
    for obj in (replace(objective, model_coef=0.0), replace(objective, pref_coef=0.0)):
        d.set_lora_state(state)
        params = d.lora_parameters()
        for p in params:
            p.grad = None
        res = accumulate_gradients(d, x0, {}, y, replace(obj, timesteps_per_image=GRADIENT_TIMESTEPS),
                                   generator=torch.Generator().manual_seed(seed))
        delta = delta or res.delta
        grads.append(torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten().double()
                                for p in params]))
        for p in params:
            p.grad = None
    pref, sim = grads
    if float(sim.norm()) == 0 or float(pref.norm()) == 0:
        return float("nan"), float("nan"), delta
    return float(sim.norm() / pref.norm()), float(pref @ sim / (pref.norm() * sim.norm())), delta


def one_seed(seed: int, rounds: int, eval_size: int, task: str = "bold") -> list[dict]:
    cfg = LoopConfig(rounds=rounds, task=task, seed=seed, eval_size=eval_size,
                     eval_rounds=tuple(range(1, rounds + 1)))
    world = DigitsWorld(cfg)
    d, objective = world.denoiser, world.update_config.objective
    rows: list[dict] = []
    before = _state(d)

    def on_round(r: int, imgs: torch.Tensor, fb: list[float], ck) -> None:
        nonlocal before
        after, y = _state(d), torch.tensor(fb, dtype=torch.float32)
        g = torch.Generator().manual_seed(seed * 1000 + r)
        row = {"seed": seed, "round": r + 1, "liked": sum(v > 0 for v in fb), "shown": len(fb),
               "agreement": agreement(d, before, after, imgs, y, objective.k, g),
               "preferred": ck.preferred if ck else float("nan")}
        row["ratio"], row["cos"], delta = term_gradients(d, before, imgs, y, objective, seed * 1000 + r)
        row["delta_liked"] = _mean([v for v, a in zip(delta, fb) if a > 0])
        row["delta_disliked"] = _mean([v for v, a in zip(delta, fb) if a < 0])
        d.set_lora_state(after)  # the loop goes on from the update it made
        before = after
        rows.append(row)

    with tempfile.TemporaryDirectory() as tmp:
        _, session, _ = run_loop(cfg, SessionStore(tmp), "walk", on_round=on_round, world=world)
    for row, rnd in zip(rows, session.rounds):
        row["step_scale"] = (rnd.update or {}).get("step_scale")
    return rows


def _mean(values: list[float]) -> float:
    return statistics.mean(values) if values else float("nan")


def _median(values: list[float]) -> float:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--eval-size", type=int, default=64, help="evaluation samples (the bold threshold is set on them)")
    p.add_argument("--task", choices=("bold", "classes"), default="bold", help="classes: the same measures, for contrast")
    a = p.parse_args()
    if a.rounds < 1 or a.eval_size < 2:
        p.error(f"--rounds must be at least 1 and --eval-size at least 2 (the bold threshold is a percentile of "
                f"the evaluation samples); got --rounds {a.rounds}, --eval-size {a.eval_size}")
    cap = TrustRegion().max_scale
    rows = []
    for seed in a.seeds:
        for r in one_seed(seed, a.rounds, a.eval_size, a.task):
            rows.append(r)
            print(f"seed {seed} round {r['round']:2d}: liked {r['liked']}/{r['shown']}, agreement {r['agreement']:+.2e}, "
                  f"s {r['step_scale']:.2f}, |sim|/|pref| {r['ratio']:.2f}, cos {r['cos']:+.2f}, "
                  f"Δ liked {r['delta_liked']:+.2e} disliked {r['delta_disliked']:+.2e}, "
                  f"preferred after {r['preferred']:.3f}", flush=True)
    for name, group in (("rounds with a dislike", [r for r in rows if r["liked"] < r["shown"]]),
                        ("rounds all liked", [r for r in rows if r["liked"] == r["shown"]])):
        if group:
            print(f"{name}: {len(group)}, against the answers {sum(r['agreement'] < 0 for r in group)}, "
                  f"step at its cap {sum(r['step_scale'] >= cap - 1e-6 for r in group)}, "
                  f"median |sim|/|pref| {_median([r['ratio'] for r in group]):.2f}, "
                  f"median cos {_median([r['cos'] for r in group]):+.2f}, liked images less likely than "
                  f"under the base (Δ > 0) in {sum(r['delta_liked'] > 0 for r in group)}")
    print(f"updates against the answers {sum(r['agreement'] < 0 for r in rows)}/{len(rows)}, "
          f"step at its cap {sum(r['step_scale'] >= cap - 1e-6 for r in rows)}/{len(rows)}")


if __name__ == "__main__":
    main()
