"""Arithmetic per (image, timestep) pair on SD-sized UNets, counted by torch's FLOP counter.

    python -m benchmarks.unet_flops                     # SD1.5 at 512 px (64×64 latent)
    python -m benchmarks.unet_flops --arch sdxl         # SDXL at 1024 px (heavy on a CPU; not run here)

Counts, not timings: a machine-independent lower bound for a round (pairs × FLOPs / peak FLOP/s)
where no GPU was at hand to time one. Random weights, built from the config as in update_speed.py.
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from benchmarks import update_speed as us  # noqa: E402


def count(fn) -> float:
    """TFLOP (multiply and add counted separately) of one call."""
    with FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops() / 1e12


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="sd15", choices=sorted(us.ARCHS))
    p.add_argument("--latent", type=int, default=64, help="latent side (SDXL is always 128)")
    p.add_argument("--targets", default="attention")
    p.add_argument("--half-weights", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    a.device = "cpu"
    d, unet, ctx = us.lora_denoiser(a)
    lat = us.latent_side(a)
    x = torch.randn(1, 4, lat, lat)
    t = torch.tensor([500])
    cond = us.cond_for(a.arch, 1, ctx, "cpu")
    kw = {"encoder_hidden_states": cond["encoder_hidden_states"]}
    if a.arch == "sdxl":
        kw["added_cond_kwargs"] = {"text_embeds": cond["text_embeds"], "time_ids": cond["time_ids"]}

    def no_grad():
        with torch.no_grad():
            d.eps(x, t, cond, lora=False)

    no_grad_tf = count(no_grad)
    lora_tf = count(lambda: (d.eps(x, t, cond) - x).pow(2).mean().backward())
    for q in unet.parameters():
        q.requires_grad_(True)
    full_tf = count(lambda: (unet(x, t, **kw).sample - x).pow(2).mean().backward())
    print(f"{a.arch} UNet, {lat}x{lat} latent, TFLOP per (image, t) pair: forward without gradient {no_grad_tf:.4g}; "
          f"forward + backward into the LoRA {lora_tf:.4g}; forward + backward into all weights {full_tf:.4g}")


if __name__ == "__main__":
    main()
