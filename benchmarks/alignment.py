"""Alignment benchmark on the embedded digits model: PAPA variants and baselines at equal label budgets.

    python -m benchmarks.alignment --out docs/benchmarks/alignment   # all methods, 3 seeds, 30 rounds

Every method sees the same simulated person, the same seeds and 10 labels per round. Results are
appended to <out>/results.json after every run (a restarted benchmark skips runs already there),
then summarised in <out>/summary.md and <out>/preferred.png.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from papa_core.digits.loop import LoopConfig, checkpoint_dicts, run_loop  # noqa: E402
from papa_core.plotting import line_plot  # noqa: E402
from papa_core.selection import DEFAULT_STRATEGY, STRATEGIES  # noqa: E402
from papa_core.session import SessionStore  # noqa: E402

from .results import ResultsFile, mean_sd  # noqa: E402

METHODS = ("default", "style", "reference", "epapa", "liked_only", "dpo")


def run_one(method: str, cfg: LoopConfig) -> dict:
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        history, session, world = run_loop(cfg, SessionStore(tmp), f"bench-{method}-{cfg.seed}")
    import torch

    return {"method": method, "seed": cfg.seed, "task": cfg.task, "rounds": cfg.rounds, **settings(cfg),
            "device": torch.cuda.get_device_name(0) if cfg.device == "cuda" else f"CPU ({os.cpu_count()} cores)",
            "wall_seconds": time.perf_counter() - t0,
            "checkpoints": checkpoint_dicts(history), "rounds_trace": [
                {"round": r.index + 1, "likes": sum(v > 0 for v in r.feedback), "dislikes": sum(v < 0 for v in r.feedback),
                 "change": (r.update or {}).get("change"), "step_scale": (r.update or {}).get("step_scale")}
                for r in session.rounds]}


def settings(cfg: LoopConfig) -> dict:
    """What a stored run must share with a new one to stand for it (``ResultsFile.done``)."""
    shown = {"pool_size": cfg.pool_size, "selection": cfg.selection} if cfg.pool_size else {}  # (older runs: none)
    # Runs before 2026-12-02's §7.17 sampled t < k with the base model and carry no key.
    sampler = {} if cfg.base_below_k else {"lora_below_k": True}
    return {"eval_size": cfg.eval_size, "update_config": cfg.update_config().to_dict(),
            "label_noise": cfg.label_noise, "skip_unsure": cfg.skip_unsure, **shown, **sampler}


def summarise(results: list[dict], out: Path, task: str) -> str:
    rows = [r for r in results if r["task"] == task]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    rounds = sorted({c["round"] for r in rows for c in r["checkpoints"]})
    lines = [f"### Task: {task} — mean ± sd over seeds ({', '.join(sorted({str(r['seed']) for r in rows}))})", ""]
    lines.append("| method | round | labels | preferred | confident (>0.9) | nearest-real dist | diversity | "
                 "s / update | timesteps / update |")
    lines.append("|---|---|---|---|---|---|---|---|---|")
    series = {}
    for m in methods:
        mr = [r for r in rows if r["method"] == m]
        xs, ys = [], []
        for rd in rounds:
            cks = [c for r in mr for c in r["checkpoints"] if c["round"] == rd]
            if not cks:
                continue
            pref = [c["preferred"] for c in cks]
            lines.append(f"| {m} | {rd} | {cks[0]['labels']} | {mean_sd(pref)} | "
                         f"{mean_sd([c['confident'] for c in cks])} | {mean_sd([c['nearest_real'] for c in cks])} | "
                         f"{mean_sd([c['diversity'] for c in cks])} | "
                         f"{statistics.mean(c['seconds_update'] for c in cks):.2f} | "
                         f"{statistics.mean(c['timesteps'] for c in cks):.0f} |")
            xs.append(rd * 10)
            ys.append(statistics.mean(pref))
        series[m] = (xs, ys)
        reach = next((x for x, y in zip(xs, ys) if y >= 0.9), None)
        lines.append(f"| {m} | **labels to reach 90% preferred (mean curve)** | {reach if reach else 'not reached'} "
                     "| | | | | | |")
    line_plot(series, out / f"preferred_{task}.png", title=f"preferred fraction vs labels ({task})",
              xlabel="labels", ylabel="preferred")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="*", default=list(METHODS), choices=METHODS)
    p.add_argument("--variant", nargs=3, action="append", default=[], metavar=("NAME", "PRESET", "JSON"),
                   help="an extra method: a preset with update overrides, e.g. lr5e-3 default '{\"lr\": 5e-3}'")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--checkpoints", nargs="+", type=int, default=[5, 10, 20, 30])
    p.add_argument("--task", default="classes", choices=["classes", "bold"])
    p.add_argument("--eval-size", type=int, default=128)
    p.add_argument("--out", default="docs/benchmarks/alignment")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--label-noise", type=float, default=0.0, help="share of the simulated person's answers flipped")
    p.add_argument("--skip-unsure", type=float, default=0.0,
                   help="the simulated person answers 0 (neutral) where |score| is below this")
    p.add_argument("--pool", type=int, default=0,
                   help="candidates generated per round, of which the 10 shown are chosen by --select (0: a plain batch)")
    p.add_argument("--select", default=DEFAULT_STRATEGY, choices=STRATEGIES,
                   help="how the shown images are chosen from the pool (papa_core/selection.py)")
    p.add_argument("--base-below-k", action="store_true",
                   help="sample t < k with the base model (the paper's EPAPA sampler, as the tables before §7.17 "
                        "of docs/benchmarks.md); without it the LoRA acts at every step, as in every host")
    p.add_argument("--suffix", default="", help="appended to every method's name (e.g. _flip10 for a noisy person)")
    a = p.parse_args()
    shown = LoopConfig().batch_size
    if 0 < a.pool < shown or a.pool < 0:
        p.error(f"--pool must be 0 (a plain batch) or at least the {shown} images shown a round, got {a.pool}")
    out = Path(a.out)
    store = ResultsFile(out, ("method", "seed", "task", "rounds"))
    runs = [(m + a.suffix, m, {}) for m in a.methods] + [(n + a.suffix, p_, json.loads(j)) for n, p_, j in a.variant]
    for m, preset, overrides in runs:
        for s in a.seeds:
            cfg = LoopConfig(rounds=a.rounds, preset=preset, seed=s, task=a.task, eval_size=a.eval_size,
                             eval_rounds=tuple(c for c in a.checkpoints if c <= a.rounds), device=a.device,
                             update_overrides=overrides, label_noise=a.label_noise, skip_unsure=a.skip_unsure,
                             pool_size=a.pool, selection=a.select if a.pool else "random",
                             base_below_k=a.base_below_k)
            if store.done(settings(cfg), method=m, seed=s, task=a.task, rounds=a.rounds):
                continue
            r = run_one(m, cfg)
            store.add(r)
            last = r["checkpoints"][-1]
            print(f"{m} seed {s}: preferred {r['checkpoints'][0]['preferred']:.3f} -> {last['preferred']:.3f}, "
                  f"confident {last['confident']:.3f}, nearest-real {last['nearest_real']:.3f}, "
                  f"{r['wall_seconds']:.0f}s", flush=True)
    text = summarise(store.results, out, a.task)
    (out / f"summary_{a.task}.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
