"""Active queries on the embedded digits model: labels to the target, per selection strategy.

    python -m benchmarks.active --out docs/benchmarks/active                  # class task, 3 seeds
    python -m benchmarks.active --out docs/benchmarks/active_bold --task bold --strategies random uncertain mixed

Every strategy uses the default update, the same simulated person, the same seeds and the same
labels per round (``--batch``, default ``SHOWN_PER_ROUND``: what PAPA Generate Batch shows unless told); ``random``
shows a plain batch (no extra generation), the others pick the batch from a pool of ``--pool``
candidates (default ``POOL_FACTOR`` × the batch). Results are appended to <out>/results.json after every run
(a restarted benchmark skips runs already there); the table goes to <out>/summary_<task>_<batch>.md. The
last line: labels to 90 % preferred on the class task at the run's ``--batch``, mean over seeds, for
``random`` and for the best active strategy (``>N`` where a seed does not reach it within N labels).
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from papa_core.digits.loop import LoopConfig, checkpoint_dicts, run_loop  # noqa: E402
from papa_core.errors import PapaError  # noqa: E402
from papa_core.selection import POOL_FACTOR, SHOWN_PER_ROUND, STRATEGIES, pool_size  # noqa: E402
from papa_core.session import SessionStore  # noqa: E402

from .results import ResultsFile, mean_sd  # noqa: E402

TARGET = {"classes": 0.90, "bold": 0.85}
TABLE_ROUNDS = (2, 5, 10, 20)


def run_one(strategy: str, seed: int, task: str, rounds: int, batch: int, pool: int,
            eval_rounds: tuple[int, ...], eval_size: int) -> dict:
    cfg = LoopConfig(rounds=rounds, seed=seed, task=task, batch_size=batch, eval_size=eval_size,
                     eval_rounds=eval_rounds, selection=strategy, pool_size=0 if strategy == "random" else pool)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        history, session, world = run_loop(cfg, SessionStore(tmp), f"active-{strategy}-{seed}")
    return {"strategy": strategy, "seed": seed, "task": task, "rounds": rounds, "batch": batch, "pool": cfg.pool_size,
            "eval_size": eval_size, "device": f"CPU ({os.cpu_count()} cores)",
            "wall_seconds": time.perf_counter() - t0, "query_seconds": world.query_seconds,
            "labels": session.label_count, "checkpoints": checkpoint_dicts(history)}


def labels_to(run: dict, target: float) -> int | None:
    """Labels given when the evaluation first read ``target`` preferred (None: never within the run)."""
    return next((c["labels"] for c in run["checkpoints"] if c["round"] and c["preferred"] >= target), None)


def mean_labels(runs: list[dict], target: float) -> str:
    reached = [labels_to(r, target) for r in runs]
    if any(v is None for v in reached):
        return f">{max(r['labels'] for r in runs)}"
    return f"{statistics.mean(reached):.0f}"


def summarise(results: list[dict], task: str, batch: int) -> tuple[str, dict[str, str]]:
    rows = [r for r in results if r["task"] == task and r["batch"] == batch]
    target = TARGET[task]
    lines = [f"### {task} task, {batch} labels a round — mean ± sd over seeds {sorted({r['seed'] for r in rows})}", "",
             f"| strategy | labels to {target:.0%} | round | preferred | confident (>0.9) | nearest-real | diversity "
             "| generation s / label |", "|---|---|---|---|---|---|---|---|"]
    reach = {}
    for s in [s for s in STRATEGIES if any(r["strategy"] == s for r in rows)]:
        runs = [r for r in rows if r["strategy"] == s]
        reach[s] = mean_labels(runs, target)
        per_label = statistics.mean(r["query_seconds"] / r["labels"] for r in runs)
        for rd in (0, *TABLE_ROUNDS):
            cks = [c for r in runs for c in r["checkpoints"] if c["round"] == rd]
            if cks:
                lines.append(f"| {s} | {reach[s]} | {rd} | {mean_sd([c['preferred'] for c in cks])} | "
                             f"{mean_sd([c['confident'] for c in cks])} | {mean_sd([c['nearest_real'] for c in cks])}"
                             f" | {mean_sd([c['diversity'] for c in cks])} | {per_label:.3f} |")
    return "\n".join(lines), reach


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--task", default="classes", choices=sorted(TARGET))
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--batch", type=int, default=SHOWN_PER_ROUND,
                   help=f"labels per round: images shown (default {SHOWN_PER_ROUND}, as PAPA Generate Batch)")
    p.add_argument("--pool", type=int, default=None, help="candidates per round for the active strategies "
                   f"(default {POOL_FACTOR} × the batch)")
    p.add_argument("--eval-rounds", nargs="+", type=int, default=[1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20])
    p.add_argument("--eval-size", type=int, default=64)
    p.add_argument("--out", default="docs/benchmarks/active")
    a = p.parse_args()
    out = Path(a.out)
    store = ResultsFile(out, ("strategy", "seed", "task", "rounds", "batch"))
    try:
        pool = pool_size(a.batch, a.pool)
    except PapaError as e:
        p.error(f"--batch / --pool: {e}")
    for s in a.strategies:
        for seed in a.seeds:
            if store.done(strategy=s, seed=seed, task=a.task, rounds=a.rounds, batch=a.batch):
                continue
            r = run_one(s, seed, a.task, a.rounds, a.batch, pool, tuple(x for x in a.eval_rounds if x <= a.rounds),
                        a.eval_size)
            store.add(r)
            print(f"{s} seed {seed} ({a.task}): preferred {r['checkpoints'][0]['preferred']:.3f} -> "
                  f"{r['checkpoints'][-1]['preferred']:.3f}, labels to {TARGET[a.task]:.0%}: "
                  f"{labels_to(r, TARGET[a.task])}, {r['wall_seconds']:.0f}s", flush=True)
    text, _ = summarise(store.results, a.task, a.batch)
    (out / f"summary_{a.task}_{a.batch}.md").write_text(text + "\n")
    print(text)
    _, reach = summarise(store.results, "classes", a.batch)
    active = {s: v for s, v in reach.items() if s != "random"}
    if "random" in reach and active:
        best = min(active, key=lambda s: (active[s].startswith(">"), int(active[s].lstrip(">"))))
        print(f"labels to 90%: random {reach['random']} active {active[best]}")


if __name__ == "__main__":
    main()
