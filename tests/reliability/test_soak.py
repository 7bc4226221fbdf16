"""Soak: the digits loop for many rounds in one process (PAPA_SOAK_ROUNDS, default 12; the full run is 200).

Resident memory must grow < 10 % after warm-up, open file descriptors must not grow, and the LoRA and
optimizer state must stay finite.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the workers run as modules from here
ROUNDS = int(os.environ.get("PAPA_SOAK_ROUNDS", "12"))


def test_soak_memory_handles_and_finiteness(tmp_path):
    warmup = max(4, min(10, ROUNDS // 2))  # short runs need half of them to get past allocator warm-up
    r = subprocess.run([sys.executable, "-m", "tests.reliability.soak", "--rounds", str(ROUNDS), "--warmup", str(warmup),
                        "--sampling-steps", "10", "--out", str(tmp_path / "soak.json")], cwd=ROOT,
                       capture_output=True, text=True, timeout=3600)
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("SOAK ")]
    assert r.returncode == 0 and line, r.stderr[-3000:]
    s = json.loads(line[0][5:])
    assert s["rss_growth"] < 0.10, s
    assert s["fds_end"] <= s["fds_warm"], s
    assert s["lora_finite"] and s["optimizer_finite"], s
    assert s["labels"] > 0
