"""``python -m papa_core demo``: the online loop on the embedded digits model with a simulated user.

Writes into --out: a grid PNG per round (green frame = liked, red = disliked), alignment.png (the
liked share of each shown batch), the exported LoRA (kohya format) and the session folder. The last
line printed is exactly ``preferred <base>% -> <final>% after <labels> labels``; each of its two
figures is measured on fresh samples, drawn until its 95 % interval is within ±3 points (at most
``--final-eval``). The per-round lines say how many of the shown images the person liked, and with
``--eval-every`` the preferred fraction of a fixed ``--eval-size`` batch.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Generic, TypeVar

import torch

from .errors import FeedbackError, PapaError
from .feedback import parse_feedback
from .lora_io import export_lora
from .plotting import image_grid, line_plot
from .selection import DEFAULT_STRATEGY, POOL_FACTOR, STRATEGIES, pool_size
from .session import SessionStore
from .summary import like_rate_by_round

FINAL_EVAL = 1024  # at p = 0.5 (the worst case) 1.96·√(0.25 / 1024) = 0.031: ±3 points
# The preset a person would pick for each simulated preference (PAPA Update's "what you teach"): which
# digits is what the images show, bold strokes how every image looks (docs/benchmarks.md §7.9).
TEACHES = {"classes": "default", "bold": "style"}
T = TypeVar("T")


def build_parser(sub=None) -> argparse.ArgumentParser:
    p = sub.add_parser("demo", help=__doc__.splitlines()[0]) if sub else argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rounds", type=int, default=20, help="feedback rounds (default 20)")
    p.add_argument("--batch-size", type=int, default=10, help="images per round (default 10)")
    p.add_argument("--eval-size", type=int, default=64,
                   help="fixed evaluation batch (default 64; the bold task's threshold is its base model's 70th percentile)")
    p.add_argument("--eval-every", type=int, default=0,
                   help="also evaluate the fixed batch every N rounds (default 0: only the base model)")
    p.add_argument("--final-eval", type=int, default=FINAL_EVAL,
                   help=f"most fresh samples behind each of the last line's figures (default {FINAL_EVAL}: enough for "
                   "±3 points at any preferred fraction)")
    p.add_argument("--preset", default=None, help="update preset: default, style, reference, epapa, liked_only, dpo "
                   "(default: what the simulated person teaches, default for --task classes, style for bold)")
    p.add_argument("--task", default="classes", choices=["classes", "bold"],
                   help="simulated preference: digits 1/4/7/9, or bold strokes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="outputs/demo", help="output folder (default outputs/demo)")
    p.add_argument("--select", nargs="?", const=DEFAULT_STRATEGY, choices=STRATEGIES, default=None,
                   help=f"show the batch chosen from a pool of candidates by this strategy (alone: {DEFAULT_STRATEGY}, "
                   "the best measured); without it, each round shows a plain batch")
    p.add_argument("--pool", type=int, default=None, help=f"candidates per round with --select (default {POOL_FACTOR} × batch)")
    p.add_argument("--interactive", action="store_true",
                   help="you rate each round in the terminal instead of the simulated user")
    return p


class InBackground(Generic[T]):
    """``fn(stop)`` run in a thread from ``with InBackground(fn) as task:``. ``task.result()`` waits for it
    and gives its value, or raises its error. Leaving the block sets ``stop`` and waits for the thread, so
    an error or a Ctrl-C in the block ends it too (``fn`` must return or raise soon after ``stop`` is set)
    instead of leaving it inside torch while the interpreter shuts down."""

    def __init__(self, fn: Callable[[threading.Event], T]) -> None:
        self.stop = threading.Event()
        self._fn = fn
        self._box: dict = {}
        self._thread = threading.Thread(target=self._run, name="papa-background")

    def _run(self) -> None:
        try:
            self._box["value"] = self._fn(self.stop)
        except BaseException as e:  # handed to the caller by result()
            self._box["error"] = e

    def __enter__(self) -> "InBackground[T]":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self._thread.join()

    def result(self) -> T:
        self._thread.join()
        if "error" in self._box:
            raise self._box["error"]
        return self._box["value"]


def run(args: argparse.Namespace) -> int:
    from .digits.loop import DigitsWorld, LoopConfig, run_loop

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if min(args.rounds, args.batch_size, args.eval_size, args.final_eval) < 1 or args.eval_every < 0:
        raise PapaError("--rounds, --batch-size, --eval-size and --final-eval must be at least 1, --eval-every ≥ 0")
    try:
        pool = 0 if args.select is None else pool_size(args.batch_size, args.pool)
    except PapaError as e:
        raise PapaError(f"--batch-size / --pool: {e}") from None
    every = args.eval_every
    cfg = LoopConfig(rounds=args.rounds, batch_size=args.batch_size, eval_size=args.eval_size,
                     preset=args.preset or TEACHES[args.task],
                     task=args.task, seed=args.seed, pool_size=pool, selection=args.select or "random",
                     eval_rounds=tuple(range(every, args.rounds + 1, every)) if every else ())
    store = SessionStore(out / "sessions")
    try:
        from tqdm import tqdm
        bar = tqdm(total=cfg.rounds, desc="PAPA rounds", unit="round", file=sys.stderr, disable=args.interactive)
    except ImportError:  # pragma: no cover
        bar = None

    def ask(imgs: torch.Tensor, r: int) -> list[float]:
        path = image_grid(imgs, out / f"round_{r + 1:03d}_to_rate.png", ncol=5, scale=8, numbers=True)
        print(f"round {r + 1}: rate the {len(imgs)} images in {path}")
        while True:
            text = input(f"  one symbol per image (+ like, - dislike, 0 neutral), e.g. {'+ - ' * 2}…: ")
            try:
                return parse_feedback(text, len(imgs))
            except FeedbackError as e:
                print(f"  {e}")

    def on_round(r, imgs, fb, ck):
        image_grid(imgs, out / f"round_{r + 1:03d}.png", ncol=10, scale=4, marks=fb)
        msg = f"round {r + 1:3d}: liked {sum(v > 0 for v in fb)} of the {len(fb)} shown"
        if ck is not None:
            msg += (f"; fixed batch of {cfg.eval_size}: preferred {100 * ck.preferred:5.1f}%  confident "
                    f"{100 * ck.confident:5.1f}%  nearest-real {ck.nearest_real:.3f}  diversity {ck.diversity:.2f}")
        (bar.write(msg) if bar is not None else print(msg))
        if bar is not None:
            bar.update(1)

    t0 = time.perf_counter()
    # The rounds sample and train batches of 10 images of 16×16, where one thread is about twice as fast
    # as two on 2 cores (docs/benchmarks.md §4); another core measures the base model meanwhile, on its
    # own copy (the base's share does not depend on the rounds).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    world = DigitsWorld(cfg)
    base_world = world.base_copy()  # copied here, before the rounds change the LoRA
    with InBackground(lambda stop: base_world.preferred_share(lora=False, max_samples=args.final_eval,
                                                              stop=stop)) as base_share:
        history, session, world = run_loop(cfg, store, f"demo-{args.task}-{args.seed}", world=world,
                                           feedback_fn=ask if args.interactive else None, on_round=on_round)
        base, n_base = base_share.result()  # with the default rounds, done by now
    torch.set_num_threads(threads)  # the final share samples batches of 128: every core helps
    if bar is not None:
        bar.close()
    rounds, liked = like_rate_by_round(session)
    line_plot({"liked share of the shown batch": (rounds, liked)}, out / "alignment.png",
              title=f"PAPA on digits: what the person liked ({world.preference.name})", xlabel="round",
              ylabel="liked share")
    lora_path = export_lora(out / f"papa_digits_{args.task}.safetensors", session.lora_state, session.lora_config,
                            papa_metadata={"rounds": len(session.rounds), "labels": session.label_count,
                                           "algorithm": world.update_config.objective.loss,
                                           "hyperparameters": world.update_config.to_dict()})
    final, n_final = world.preferred_share(lora=True, max_samples=args.final_eval)
    (out / "history.json").write_text(json.dumps({"rounds": [c.__dict__ for c in history], "final_eval": {
        "base": base, "base_samples": n_base, "final": final, "final_samples": n_final}}, indent=1))
    print(f"wrote {out}/round_*.png, {out}/alignment.png, {lora_path} ({time.perf_counter() - t0:.0f}s)")
    print(f"preferred {100 * base:.0f}% -> {100 * final:.0f}% after {session.label_count} labels")
    return 0
