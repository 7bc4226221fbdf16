"""How much the default's LoRA changes the predicted noise below and above k (docs/benchmarks.md §7.17).

    OMP_NUM_THREADS=1 PYTHONPATH=. python docs/benchmarks/issue15/every_step/below_k_change.py [--rounds 10] [--seeds 0]

Runs the class task with the default, with and without ``below_k_timesteps``, and measures on the
run's own labelled images, at fixed noise, ρ(t) = ‖ε_θ − ε_θ*‖ / ‖ε_θ*‖ (θ* the base model) in bands of t.
"""
import argparse
import tempfile

import torch

from papa_core.digits.loop import LoopConfig, run_loop
from papa_core.session import SessionStore

BANDS = ((0, 100), (100, 200), (200, 400), (400, 700), (700, 1000))


def change_by_band(world, images: torch.Tensor, g: torch.Generator) -> list[float]:
    d, out = world.denoiser, []
    for lo, hi in BANDS:
        t = torch.randint(lo, hi, (len(images),), generator=g)
        noise = torch.randn(images.shape, generator=g)
        with torch.no_grad():
            x_t = d.schedule.add_noise(images, noise, t)
            on, off = d.eps(x_t, t, {}, lora=True), d.eps(x_t, t, {}, lora=False)
        out.append(float((on - off).norm() / off.norm()))
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    a = p.parse_args()
    print("below_k_timesteps seed " + " ".join(f"t{lo}-{hi - 1}" for lo, hi in BANDS))
    for m_low in (0, 1):
        for seed in a.seeds:
            cfg = LoopConfig(rounds=a.rounds, seed=seed, eval_size=16, eval_rounds=(a.rounds,),
                             update_overrides={"objective": {"below_k_timesteps": m_low}})
            with tempfile.TemporaryDirectory() as tmp:
                _, session, world = run_loop(cfg, SessionStore(tmp), "t")
                images = torch.cat([r.x0 for r in session.rounds]).float()
            rho = change_by_band(world, images, torch.Generator().manual_seed(1))
            print(f"{m_low} {seed} " + " ".join(f"{v:.4f}" for v in rho), flush=True)


if __name__ == "__main__":
    main()
