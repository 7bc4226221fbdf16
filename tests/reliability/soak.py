"""Soak: many rounds of the digits loop in one process, watching memory, file handles and finiteness.

    python -m tests.reliability.soak --rounds 200 [--warmup 10] [--out soak.json]

Each round samples, labels (simulated person), saves, updates and saves again, as the demo does.
Prints one JSON line: RSS (MiB) after warm-up and at the end, its growth, open file descriptors at
both points, and whether the LoRA and the optimizer state stayed finite.
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from papa_core.digits.loop import LoopConfig, run_loop  # noqa: E402
from papa_core.session import SessionStore  # noqa: E402


def _release_freed_memory() -> None:
    """Collect garbage and hand glibc's freed-but-kept pages back, so RSS shows what is retained
    (a leak), not where the allocator's free lists happen to stand after the last round."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: RSS then includes the allocator's slack
        pass


def rss_mib() -> float:
    _release_freed_memory()
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=200)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=10)
    p.add_argument("--sampling-steps", type=int, default=20)
    p.add_argument("--out", type=Path)
    a = p.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    samples: list[dict] = []

    def on_round(r, imgs, fb, ck):
        samples.append({"round": r + 1, "rss_mib": rss_mib(), "fds": open_fds(), "t": time.perf_counter()})

    with tempfile.TemporaryDirectory() as tmp:
        # the person's loop only: no evaluation batches after round 0 (they are a benchmark's, not a user's)
        cfg = LoopConfig(rounds=a.rounds, batch_size=a.batch_size, eval_size=16, eval_rounds=[a.rounds + 1],
                         sampling_steps=a.sampling_steps, seed=0)
        t0 = time.perf_counter()
        _, session, world = run_loop(cfg, SessionStore(tmp), "soak", on_round=on_round)
        lora_ok = all(torch.isfinite(v).all() for v in session.lora_state.values())
        opt_ok = all(torch.isfinite(v).all() for v in (session.optimizer_state or {}).values() if v.is_floating_point())
        files = len(list(Path(tmp, "soak").iterdir()))
    warm = samples[min(a.warmup, len(samples)) - 1]
    last = samples[-1]
    peak = max(s["rss_mib"] for s in samples[min(a.warmup, len(samples)) - 1:])
    out = {"rounds": a.rounds, "warmup_round": warm["round"], "rss_warm_mib": round(warm["rss_mib"], 1),
           "rss_end_mib": round(last["rss_mib"], 1), "rss_peak_after_warmup_mib": round(peak, 1),
           "rss_growth": round((peak - warm["rss_mib"]) / warm["rss_mib"], 4),
           "fds_warm": warm["fds"], "fds_end": last["fds"], "lora_finite": bool(lora_ok),
           "optimizer_finite": bool(opt_ok), "session_files": files, "seconds": round(time.perf_counter() - t0, 1),
           "labels": session.label_count}
    if a.out:
        a.out.write_text(json.dumps({"summary": out, "samples": samples}, indent=1))
    print("SOAK " + json.dumps(out))


if __name__ == "__main__":
    main()
