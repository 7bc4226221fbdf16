"""Does the default step mean the same at every model size? The scale-free step against the raw lr.

    python -m benchmarks.transfer --out docs/benchmarks/transfer      # CPU, about 15 minutes

Runs the same update preset for a few rounds on three models of very different size — the
embedded digits UNet (1.2 M parameters, 16×16 pixels), an SD1.5-shaped UNet (860 M, random
weights, a small latent) and an SDXL-shaped toy (SDXL's blocks — text_time conditioning, 1/2/10
transformer layers, 2048-wide context — at a small width) — each round on the same kind of
feedback (half of the images liked, half disliked), once with the default (``strength``: the
trust region) and once with the old default (the same preset with the raw lr step,
``strength=None``). After each round it measures the relative output change

    ρ = ‖ε_after(x_t, t, c) − ε_before(x_t, t, c)‖ / ‖ε_before(x_t, t, c)‖

on held-out pairs: the round's images under fresh noise at fresh timesteps t ≥ k (not the pairs the
trust region fitted on). The spread of a round is max/min of ρ over the three models; the last
line is ``transfer spread <new> (old default <old>)``, the worst round of each.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from papa_core.denoiser import DiffusersDenoiser  # noqa: E402
from papa_core.lora import LoraConfig  # noqa: E402
from papa_core.schedule import DiffusionSchedule  # noqa: E402
from papa_core.session import SessionStore  # noqa: E402
from papa_core.trust_region import make_probe, relative_change  # noqa: E402
from papa_core.update import update, update_preset  # noqa: E402

from .results import ResultsFile  # noqa: E402
from .update_speed import SD15, SDXL, TINY, cond_for  # noqa: E402

SDXL_TOY = dict(SDXL, block_out_channels=(64, 128, 256), attention_head_dim=(2, 4, 8))
HELD_OUT_T = 8  # held-out (noise, t) draws per image, stratified over t ≥ k


def build(name: str, latent: int):
    """(denoiser, images [B, C, H, W], conditioning) for ``name``; random weights except digits."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    if name == "digits":
        from papa_core.digits.data import digits_16
        from papa_core.digits.models import digits_schedule, load_unet

        sched = digits_schedule()
        d = DiffusersDenoiser(load_unet("cpu"), sched, LoraConfig(targets="attention+conv"))  # the demo's LoRA
        return d, digits_16()[0], None
    arch = {"sd15": SD15, "sdxl_toy": SDXL_TOY, "tiny": TINY}[name]  # tiny: the tests' smoke run
    unet = UNet2DConditionModel(**arch).eval()
    d = DiffusersDenoiser(unet, DiffusionSchedule.scaled_linear(), LoraConfig())  # what the ComfyUI nodes train
    images = torch.randn(64, 4, latent, latent, generator=torch.Generator().manual_seed(3))
    return d, images, (lambda n: cond_for("sdxl" if name == "sdxl_toy" else "sd15", n, arch["cross_attention_dim"],
                                          "cpu"))


def run(name: str, method: str, rounds: int, batch: int, latent: int) -> dict:
    d, pool, cond_fn = build(name, latent)
    cfg = update_preset("default", **({} if method == "default" else {"strength": None}))
    params = sum(p.numel() for n, p in d.unet.named_parameters() if "lora_" not in n)
    per_round = []
    with tempfile.TemporaryDirectory() as tmp:
        store = SessionStore(tmp)
        s = store.create("transfer", d.fingerprint, d.lora_config, d.get_lora_state())
        for r in range(rounds):
            x0 = pool[r * batch:(r + 1) * batch]
            cond = {} if cond_fn is None else {k: v for k, v in cond_fn(batch).items()}
            s.add_round(x0, cond, list(range(r * batch, (r + 1) * batch)))
            s.record_feedback([1.0 if i % 2 == 0 else -1.0 for i in range(batch)])
            probe = make_probe(d, x0, cond, cfg.objective.k, HELD_OUT_T, torch.Generator().manual_seed(99 + r), 16)
            t0 = time.perf_counter()
            st = update(s, d, cfg)
            per_round.append({"round": r + 1, "held_out_change": relative_change(d, probe, 16),
                              "fitted_change": st.change, "target": st.change_target, "step_scale": st.step_scale,
                              "seconds": time.perf_counter() - t0})
            print(f"  {name} {method} round {r + 1}: ρ held-out {per_round[-1]['held_out_change']:.4f}"
                  f"{'' if st.change is None else f', fitted {st.change:.4f} (τ {st.change_target:.4f}, s {st.step_scale:.2f})'}"
                  f", {per_round[-1]['seconds']:.0f}s", flush=True)
    return {"model": name, "method": method, "parameters": params, "latent": None if name == "digits" else latent,
            "rounds": per_round, "device": f"CPU ({os.cpu_count()} cores)"}


def spread(results: list[dict], method: str, rounds: int) -> float:
    """The worst round's max/min of the held-out ρ over the models."""
    worst = 1.0
    for r in range(rounds):
        vals = [x["rounds"][r]["held_out_change"] for x in results if x["method"] == method]
        worst = max(worst, max(vals) / min(vals))
    return worst


def table(results: list[dict], rounds: int) -> str:
    lines = ["| model | parameters | method | " + " | ".join(f"ρ round {r + 1}" for r in range(rounds)) + " |",
             "|---|---|---|" + "---|" * rounds]
    for x in results:
        lines.append(f"| {x['model']} | {x['parameters'] / 1e6:.1f} M | {x['method']} | "
                     + " | ".join(f"{c['held_out_change']:.4f}" for c in x["rounds"]) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["digits", "sd15", "sdxl_toy"])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch", type=int, default=4, help="images per round (half liked)")
    p.add_argument("--latent", type=int, default=8, help="latent side of the SD-shaped models")
    p.add_argument("--out", default="docs/benchmarks/transfer")
    a = p.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    store = ResultsFile(Path(a.out), ("model", "method"))
    for name in a.models:
        for method in ("default", "old_default"):
            if not store.done(model=name, method=method):
                store.add(run(name, method, a.rounds, a.batch, a.latent))
    results = [x for x in store.results if x["model"] in a.models]
    text = table(results, a.rounds)
    (Path(a.out) / "summary.md").write_text(text + "\n")
    print(text)
    print(f"transfer spread {spread(results, 'default', a.rounds):.2f} "
          f"(old default {spread(results, 'old_default', a.rounds):.2f})")


if __name__ == "__main__":
    main()
