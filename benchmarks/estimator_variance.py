"""Gradient noise of each timestep estimator against the exact 1000-step sum, on the trained digits model.

    python -m benchmarks.estimator_variance            # ≈ 2 minutes on 2 CPU cores

ε is fixed per image so only the timestep draw varies; the LoRA is first moved away from zero by a
small random perturbation so that every LoRA tensor has a gradient. Prints a markdown table.
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from papa_core.diagnostics import estimator_noise  # noqa: E402
from papa_core.digits.loop import LoopConfig, DigitsWorld  # noqa: E402
from papa_core.objective import ObjectiveConfig  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--draws", type=int, default=30)
    p.add_argument("--ms", type=int, nargs="+", default=[8, 16, 32, 64])
    a = p.parse_args()
    world = DigitsWorld(LoopConfig(eval_size=8))
    d = world.denoiser
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a LoRA away from zero: every tensor then has a gradient
        for prm in d.lora_parameters():
            prm.add_(torch.randn(prm.shape, generator=g) * 0.01)
    x0 = world.generate(torch.randn((a.images, 1, 16, 16), generator=g))
    y = torch.tensor([1.0, -1.0] * (a.images // 2) + [1.0] * (a.images % 2))
    base = ObjectiveConfig(loss="linear", model_term="none", pref_coef=1.0, max_batch=250)
    t0 = time.perf_counter()
    _, reports = estimator_noise(d, x0, {}, y, base, ["uniform", "importance", "importance_stratified"], a.ms,
                                 a.draws)
    print(f"digits UNet (1.16M params), {a.images} images, LoRA rank 8 attention+conv, {a.draws} draws each, "
          f"ε fixed per image; {time.perf_counter() - t0:.0f}s on {torch.get_num_threads()} CPU threads\n")
    print("| estimator | m (timesteps / image) | rel. std of gradient | mean cosine to exact | rel. bias of mean |")
    print("|---|---|---|---|---|")
    for r in reports:
        print(f"| {r.estimator} | {r.timesteps_per_image} | {r.rel_std:.3f} | {r.mean_cosine:.3f} | {r.rel_bias:.3f} |")


if __name__ == "__main__":
    main()
