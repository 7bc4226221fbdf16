"""Which term of the default update moves the bold-strokes task's samples, once the model has crossed the
person's threshold (docs/benchmarks.md §7.4).

    python -m benchmarks.bold_terms [--seeds 0 1 2] [--rounds 10] [--eval-size 256]

For each seed: the default loop runs ``--rounds`` rounds of the bold task; the next batch is shown to the
simulated person; then one update on that round is made from the same state with the whole objective,
with its preference term only (model_coef 0) and with its similarity term only (pref_coef 0) — each
fitted by the trust region to the same change ρ — and the evaluation samples' mean ink and preferred
share are measured after each. Last line: ``ink change per update (base sd): full <a> preference <b>
similarity <c>`` (means over seeds; positive = heavier).
"""
from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
from dataclasses import replace

import torch

from papa_core.digits.loop import LoopConfig, run_loop
from papa_core.digits.metrics import ink_mass
from papa_core.digits.user import binary_feedback
from papa_core.session import SessionStore
from papa_core.update import update

TERMS = ("full", "preference", "similarity")


def _configs(base):
    obj = base.objective
    return {"full": base, "preference": replace(base, objective=replace(obj, model_coef=0.0)),
            "similarity": replace(base, objective=replace(obj, pref_coef=0.0))}


def one_seed(seed: int, rounds: int, eval_size: int) -> dict:
    cfg = LoopConfig(rounds=rounds, task="bold", seed=seed, eval_size=eval_size, eval_rounds=(rounds,))
    with tempfile.TemporaryDirectory() as tmp:
        _, session, world = run_loop(cfg, SessionStore(tmp), "terms")
    seeds, imgs = world.query(session, rounds)
    fb = binary_feedback(world.preference, imgs)
    session.add_round(imgs, {}, seeds)
    session.record_feedback(fb)
    base_sd = float(ink_mass(world.generate(world.eval_noise, lora=False)).std())

    def measure() -> tuple[float, float]:
        x = world.generate(world.eval_noise)
        return float(ink_mass(x).mean()), float(world.preference.liked(x).float().mean())

    ink0, share0 = measure()
    out = {"seed": seed, "likes": sum(v > 0 for v in fb), "share_before": share0}
    for name, config in _configs(world.update_config).items():
        trial = copy.deepcopy(session)
        stats = update(trial, world.denoiser, config)
        ink, share = measure()
        out[name] = {"ink_sd": (ink - ink0) / base_sd, "share": share, "change": stats.change}
        world.denoiser.set_lora_state(session.lora_state)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--eval-size", type=int, default=256, help="evaluation samples (the same noise before and after)")
    a = p.parse_args()
    rows = []
    for seed in a.seeds:
        r = one_seed(seed, a.rounds, a.eval_size)
        rows.append(r)
        print(f"seed {seed}: round {a.rounds + 1} liked {r['likes']}/10, share {r['share_before']:.3f} -> "
              + ", ".join(f"{t} {r[t]['share']:.3f} (ink {r[t]['ink_sd']:+.2f} sd, ρ {r[t]['change']:.3f})"
                          for t in TERMS), flush=True)
    means = {t: statistics.mean(r[t]["ink_sd"] for r in rows) for t in TERMS}
    print("ink change per update (base sd): " + " ".join(f"{t} {means[t]:+.2f}" for t in TERMS))


if __name__ == "__main__":
    main()
