"""What the scale-free step costs: one digits update with the trust region against the same update with
the raw lr step, alternated on the same round in one run (docs/benchmarks.md §7.1).

    python -m benchmarks.trust_region_cost [--repeats 4] [--rounds 3]

A session runs ``--rounds`` rounds of the demo's loop (10 images, the simulated person), then its last
update is undone and redone ``--repeats`` times with each step, alternating. Last line exactly:
``trust region cost <median with / median without>×``.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace

import torch

from papa_core.digits.loop import LoopConfig, run_loop
from papa_core.session import SessionStore
from papa_core.update import update


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    torch.manual_seed(0)
    cfg = LoopConfig(rounds=a.rounds, eval_every=a.rounds)
    with tempfile.TemporaryDirectory() as tmp:
        _, session, world = run_loop(cfg, SessionStore(tmp), "cost")
    with_tr = world.update_config
    without = replace(with_tr, strength=None)
    times: dict[str, list[float]] = {"with": [], "without": []}
    for _ in range(a.repeats):
        for name, config in (("with", with_tr), ("without", without)):
            session.undo_last_update()
            t0 = time.perf_counter()
            update(session, world.denoiser, config)
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"update with the trust region: median {med['with']:.2f} s; raw lr step: {med['without']:.2f} s "
          f"({a.repeats} each, alternated, {torch.get_num_threads()} CPU threads)")
    print(f"trust region cost {med['with'] / med['without']:.2f}×")


if __name__ == "__main__":
    main()
