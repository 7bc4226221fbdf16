"""A process doing real PAPA work on one session, forever, so that tests can kill it anywhere.

    python -m tests.reliability.crash_worker ROOT JOURNAL [--kill-in-write N]

Loop: add a round of tiny-UNet latents → save → record ±1 feedback → save → journal the feedback →
update (real gradient steps) → save → journal the update. A journal line (fsync'd) is written only
after the save it describes returned: it is what the session must still hold after any crash.
With ``--kill-in-write N`` the process SIGKILLs itself inside its N-th file write, at a random phase
(half the bytes in the temporary file, temporary complete but not renamed, renamed but the folder
not yet synced): a crash in the middle of writing session files, placed exactly.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from papa_core import fsio  # noqa: E402
from papa_core.denoiser import DiffusersDenoiser  # noqa: E402
from papa_core.lora import LoraConfig  # noqa: E402
from papa_core.objective import objective_preset  # noqa: E402
from papa_core.schedule import DiffusionSchedule  # noqa: E402
from papa_core.session import SessionStore  # noqa: E402
from papa_testkit.models import tiny_unet2d  # noqa: E402
from papa_core.update import update, update_preset  # noqa: E402

SESSION = "crash"
BATCH = 6


def arm_write_kill(n: int, rng: random.Random) -> None:
    """Replace fsio.atomic_write_bytes with one that dies inside its n-th call."""
    original = fsio.atomic_write_bytes
    calls = {"n": 0}

    def dying_write(path, data):
        calls["n"] += 1
        if calls["n"] < n:
            return original(path, data)
        path = Path(path)
        phase = rng.choice(["partial_tmp", "tmp_not_renamed", "renamed_not_synced"])
        tmp = path.with_name(f".{path.name}.killed00.tmp")  # named as fsio names its temporaries
        if phase == "partial_tmp":
            tmp.write_bytes(data[: len(data) // 2])
        elif phase == "tmp_not_renamed":
            tmp.write_bytes(data)
        else:
            tmp.write_bytes(data)
            os.replace(tmp, path)
        os.kill(os.getpid(), signal.SIGKILL)

    fsio.atomic_write_bytes = dying_write


def journal(f, entry: dict) -> None:
    f.write(json.dumps(entry) + "\n")
    f.flush()
    os.fsync(f.fileno())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("root")
    p.add_argument("journal")
    p.add_argument("--kill-in-write", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.set_num_threads(1)
    rng = random.Random(a.seed)
    if a.kill_in_write:
        arm_write_kill(a.kill_in_write, rng)
    den = DiffusersDenoiser(tiny_unet2d(), DiffusionSchedule.linear(1000), LoraConfig(rank=4, alpha=4.0))
    store = SessionStore(a.root)
    s = store.open_or_create(SESSION, den.fingerprint, den.lora_config, den.get_lora_state())
    cfg = update_preset("default", steps=2, images_per_step=6,
                        objective=objective_preset("default", timesteps_per_image=4, k=0).__dict__)
    g = torch.Generator().manual_seed(a.seed)
    with open(a.journal, "a") as jf:
        print("READY", flush=True)
        while True:
            s.add_round(torch.randn(BATCH, 1, 8, 8, generator=g), {}, seeds=list(range(BATCH)))
            store.save(s)
            fb = [float(rng.choice([1, -1])) for _ in range(BATCH)]
            r = s.record_feedback(fb)
            store.save(s)
            journal(jf, {"kind": "feedback", "round": r.index, "feedback": fb, "version": s.version})
            update(s, den, cfg)
            store.save(s)
            journal(jf, {"kind": "update", "round": r.index, "version": s.version})


if __name__ == "__main__":
    main()
