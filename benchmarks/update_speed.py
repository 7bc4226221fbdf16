"""Update latency and memory on Stable Diffusion 1.5's UNet: the reference way vs the project's default.

    python benchmarks/update_speed.py                      # CPU: 32×32 latent (≈ 8 minutes on 2 cores)
    python benchmarks/update_speed.py --device cuda --latent 64 --sdxl   # GPU: 512 px SD1.5 + 1024 px SDXL

Side by side in one run, each part in its own subprocess (so peak memory is per part), on the same
random-weight UNet built from SD1.5's config (no download):
  (a) reference: exact sum over T = 1000 timesteps, one forward+backward per timestep, batch 1, all
      weights trainable, fp32, one Adam step per image. Timed on --ref-timesteps evenly spaced
      timesteps and extrapolated explicitly to 1000 per image.
  (b) default: the project's default update (its estimator and m, timesteps batched, LoRA only,
      bf16 autocast on GPU), one full round of --images images, after one warm-up round.
  (c) the default estimator's noise: relative std of the LoRA gradient against the exact sum
      (ε fixed per image, only the timestep draw varies). On CPU the exact sum over 1000 SD1.5
      steps is out of reach, so (c) there is measured on the trained digits model instead (say so).
The last line is exactly ``speedup <ratio>x noise <relstd>``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

SD15 = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32)
SDXL = dict(sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 2, 10), cross_attention_dim=2048, attention_head_dim=(5, 10, 20),
            addition_embed_type="text_time", addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
            use_linear_projection=True, norm_num_groups=32)


def build(arch: str, device: str):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    cfg = SD15 if arch == "sd15" else SDXL
    return UNet2DConditionModel(**cfg).to(device), cfg["cross_attention_dim"]


def cond_for(arch: str, n: int, ctx: int, device: str) -> dict:
    g = torch.Generator().manual_seed(1)
    c = {"encoder_hidden_states": torch.randn(n, 77, ctx, generator=g).to(device)}
    if arch == "sdxl":
        c["text_embeds"] = torch.randn(n, 1280, generator=g).to(device)
        c["time_ids"] = torch.tensor([[1024, 1024, 0, 0, 1024, 1024]] * n, dtype=torch.float32).to(device)
    return c


def peak_memory(device: str) -> float:
    """GiB: torch.cuda.max_memory_allocated on GPU, peak RSS on CPU."""
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def part_reference(a) -> dict:
    from papa_core.schedule import DiffusionSchedule

    unet, ctx = build(a.arch, a.device)
    unet.train()
    sch = DiffusionSchedule.scaled_linear()
    w = sch.elbo_weights()
    opt = torch.optim.Adam(unet.parameters(), lr=1e-5)
    lat = a.latent if a.arch == "sd15" else 128
    x0 = torch.randn(1, 4, lat, lat, device=a.device)
    eps = torch.randn_like(x0)
    cond = cond_for(a.arch, 1, ctx, a.device)
    kw = {"encoder_hidden_states": cond["encoder_hidden_states"]}
    if a.arch == "sdxl":
        kw["added_cond_kwargs"] = {"text_embeds": cond["text_embeds"], "time_ids": cond["time_ids"]}
    ts = torch.linspace(0, 999, a.ref_timesteps + 1).long()  # the first one warms up, untimed
    times = []
    for i, t in enumerate(ts.tolist()):
        sync(a.device)
        t0 = time.perf_counter()
        xt = sch.add_noise(x0, eps, torch.tensor([t], device=a.device))
        loss = float(w[t]) * (unet(xt, torch.tensor([t], device=a.device), **kw).sample - eps).pow(2).mean()
        loss.backward()
        sync(a.device)
        if i > 0:
            times.append(time.perf_counter() - t0)
    sync(a.device)
    t0 = time.perf_counter()
    opt.step()
    opt.zero_grad()
    sync(a.device)
    t_adam = time.perf_counter() - t0
    per_t = sum(times) / len(times)
    per_round = a.images * (1000 * per_t + t_adam)
    return {"part": "a", "seconds_per_timestep": per_t, "adam_step_seconds": t_adam, "timed_timesteps": len(times),
            "round_seconds_extrapolated": per_round, "peak_gib": peak_memory(a.device),
            "trainable_params": sum(p.numel() for p in unet.parameters())}


def part_default(a) -> dict:
    from papa_core.denoiser import DiffusersDenoiser
    from papa_core.lora import LoraConfig
    from papa_core.schedule import DiffusionSchedule
    from papa_core.session import SessionStore
    from papa_core.update import update, update_preset
    import tempfile

    unet, ctx = build(a.arch, a.device)
    if a.device == "cuda" and a.half_weights:
        unet = unet.to(torch.bfloat16)
    d = DiffusersDenoiser(unet, DiffusionSchedule.scaled_linear(), LoraConfig(rank=8, alpha=8.0, targets=a.targets),
                          gradient_checkpointing=a.checkpointing)
    if a.device == "cuda" and a.half_weights:
        for p in d.lora_parameters():  # train the adapter in fp32 over bf16 base weights
            p.data = p.data.float()
    objective = {"max_batch": a.chunk, **({"timesteps_per_image": a.m} if a.m else {})}
    cfg = update_preset("default", objective=objective, **({"steps": a.steps} if a.steps else {}))
    lat = a.latent if a.arch == "sd15" else 128
    with tempfile.TemporaryDirectory() as tmp:
        store = SessionStore(tmp)
        s = store.create("speed", d.fingerprint, d.lora_config, d.get_lora_state())
        seconds = []
        for r in range(2):  # round 0 warms up (allocator, kernels); round 1 is the measurement
            g = torch.Generator().manual_seed(r)
            s.add_round(torch.randn(a.images, 4, lat, lat, generator=g), {k: v.cpu() for k, v in
                        cond_for(a.arch, a.images, ctx, "cpu").items()}, list(range(a.images)))
            s.record_feedback([1.0, -1.0] * (a.images // 2) + [1.0] * (a.images % 2))
            if a.device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            sync(a.device)
            t0 = time.perf_counter()
            st = update(s, d, cfg)
            sync(a.device)
            seconds.append(time.perf_counter() - t0)
    return {"part": "b", "round_seconds": seconds[-1], "warmup_round_seconds": seconds[0],
            "timesteps": st.timesteps, "forward_passes": st.forward_passes, "steps": st.steps,
            "images_trained": st.images, "peak_gib": peak_memory(a.device),
            "lora_params": sum(p.numel() for p in d.lora_parameters()), "config": cfg.to_dict()}


def part_noise(a) -> dict:
    from papa_core.diagnostics import estimator_noise
    from papa_core.objective import OBJECTIVE_PRESETS, ObjectiveConfig

    default = OBJECTIVE_PRESETS["default"]
    base = ObjectiveConfig(loss="linear", model_term="none", pref_coef=1.0, max_batch=a.max_batch,
                           k=default.k, weighting=default.weighting)
    if a.device == "cpu":
        from papa_core.digits.loop import DigitsWorld, LoopConfig

        world = DigitsWorld(LoopConfig(eval_size=4))
        d = world.denoiser
        g = torch.Generator().manual_seed(0)
        x0 = world.generate(torch.randn((a.images, 1, 16, 16), generator=g))
        cond = {}
        model = "digits UNet (trained, 1.16M params)"
    else:
        from papa_core.denoiser import DiffusersDenoiser
        from papa_core.lora import LoraConfig
        from papa_core.schedule import DiffusionSchedule

        unet, ctx = build(a.arch, a.device)
        d = DiffusersDenoiser(unet, DiffusionSchedule.scaled_linear(), LoraConfig(rank=8, alpha=8.0, targets=a.targets))
        g = torch.Generator().manual_seed(0)
        lat = a.latent if a.arch == "sd15" else 128
        x0 = torch.randn(a.images, 4, lat, lat, generator=g)
        cond = cond_for(a.arch, a.images, ctx, "cpu")
        model = f"{a.arch} UNet (random weights)"
    with torch.no_grad():
        for p in d.lora_parameters():
            p.add_(torch.randn(p.shape, generator=g).to(p.device) * 0.01)
    y = torch.tensor([1.0, -1.0] * (a.images // 2) + [1.0] * (a.images % 2))
    _, reports = estimator_noise(d, x0, cond, y, base, [default.estimator], [default.timesteps_per_image], a.draws)
    r = reports[0]
    return {"part": "c", "model": model, "estimator": r.estimator, "m": r.timesteps_per_image,
            "rel_std": r.rel_std, "mean_cosine": r.mean_cosine, "draws": a.draws}


def part_ablation(a) -> dict:
    """(d) What each choice buys, per (image, timestep) with gradient: all weights vs LoRA-only backward,
    one timestep per forward vs --ablation-batch timesteps batched, and gradient checkpointing."""
    from papa_core.denoiser import DiffusersDenoiser
    from papa_core.lora import LoraConfig
    from papa_core.schedule import DiffusionSchedule

    lat = a.latent if a.arch == "sd15" else 128
    out = {"part": "d"}
    unet, ctx = build(a.arch, a.device)
    d = DiffusersDenoiser(unet, DiffusionSchedule.scaled_linear(), LoraConfig(rank=8, alpha=8.0, targets=a.targets))

    def per_timestep(n: int, repeats: int, full: bool = False) -> float:
        cond = cond_for(a.arch, n, ctx, a.device)
        for p in unet.parameters():
            p.requires_grad_(full)
        for p in d.lora_parameters():
            p.requires_grad_(True)
        times = []
        for i in range(repeats + 1):  # the first one warms up
            x = torch.randn(n, 4, lat, lat, device=a.device)
            t = torch.randint(0, 1000, (n,), device=a.device)
            sync(a.device)
            t0 = time.perf_counter()
            d.eps(x, t, cond).pow(2).mean().backward()
            sync(a.device)
            if i:
                times.append((time.perf_counter() - t0) / n)
            unet.zero_grad(set_to_none=True)
        return sum(times) / len(times)

    out["full_unbatched_s"] = per_timestep(1, a.ref_timesteps, full=True)
    out["lora_unbatched_s"] = per_timestep(1, a.ref_timesteps)
    out["lora_batched_s"] = per_timestep(a.ablation_batch, 1)
    out["batch"] = a.ablation_batch
    unet.enable_gradient_checkpointing()
    out["lora_batched_checkpointing_s"] = per_timestep(a.ablation_batch, 1)
    out["peak_gib"] = peak_memory(a.device)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--arch", default="sd15", choices=["sd15", "sdxl"])
    p.add_argument("--latent", type=int, default=32, help="latent side (32 on CPU; 64 = 512 px)")
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--ref-timesteps", type=int, default=3, help="timesteps actually timed for (a)")
    p.add_argument("--targets", default="attention")
    p.add_argument("--steps", type=int, default=0, help="override the default's steps per round")
    p.add_argument("--m", type=int, default=0, help="override the default's timesteps per image")
    p.add_argument("--checkpointing", action="store_true", help="gradient checkpointing in (b)")
    p.add_argument("--half-weights", action="store_true", help="bf16 base weights in (b) on GPU")
    p.add_argument("--draws", type=int, default=20)
    p.add_argument("--max-batch", type=int, default=64)
    p.add_argument("--ablation-batch", type=int, default=16, help="timesteps batched in the ablation (d)")
    p.add_argument("--chunk", type=int, default=16, help="(image, t) pairs per forward/backward pass in (b): "
                   "bounds activation memory (the digits default of 256 does not fit SD1.5 in 24 GB of RAM)")
    p.add_argument("--part", choices=["a", "b", "c", "d"], help=argparse.SUPPRESS)
    p.add_argument("--parts", default="abc", help="which parts to run (d = the ablation)")
    a = p.parse_args()
    if a.part:
        fn = {"a": part_reference, "b": part_default, "c": part_noise, "d": part_ablation}[a.part]
        print("RESULT " + json.dumps(fn(a)), flush=True)
        return
    results = {}
    argv, passthrough = sys.argv[1:], []
    while argv:
        x = argv.pop(0)
        if x == "--parts":
            argv.pop(0)
        elif not x.startswith("--parts="):
            passthrough.append(x)
    for part in a.parts:
        cmd = [sys.executable, __file__, *passthrough, "--part", part]
        t0 = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True)
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if out.returncode != 0 or line is None:
            print(out.stdout[-3000:], out.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"part {part} failed")
        results[part] = json.loads(line[7:])
        print(f"part {part} ({time.perf_counter() - t0:.0f}s): {json.dumps(results[part])}", flush=True)
    dev = torch.cuda.get_device_name(0) if a.device == "cuda" else f"CPU ({os.cpu_count()} cores)"
    print(f"\n{a.arch} UNet, {a.latent}x{a.latent} latent, {a.images} images per round, device: {dev}")
    if "a" in results and "b" in results:
        ra, rb = results["a"], results["b"]
        print(f"(a) reference: {ra['round_seconds_extrapolated']:.1f} s/round (extrapolated from "
              f"{ra['timed_timesteps']} timed timesteps x {ra['seconds_per_timestep']:.3f} s, x1000 x {a.images} images "
              f"+ Adam), peak {ra['peak_gib']:.2f} GiB")
        print(f"(b) default:   {rb['round_seconds']:.2f} s/round ({rb['timesteps']} timestep-evaluations with grad, "
              f"{rb['forward_passes']} forward passes), peak {rb['peak_gib']:.2f} GiB")
    if "d" in results:
        rd = results["d"]
        print(f"(d) per (image, timestep) with gradient: all weights one at a time {rd['full_unbatched_s']:.3f} s, "
              f"LoRA-only one at a time {rd['lora_unbatched_s']:.3f} s, LoRA-only {rd['batch']} batched "
              f"{rd['lora_batched_s']:.3f} s, + gradient checkpointing {rd['lora_batched_checkpointing_s']:.3f} s")
    rel = results.get("c", {}).get("rel_std", float("nan"))
    if "c" in results:
        rc = results["c"]
        print(f"(c) noise of {rc['estimator']} m={rc['m']} on {rc['model']}: rel. std {rel:.3f}, "
              f"mean cosine {rc['mean_cosine']:.3f} over {rc['draws']} draws")
    ratio = results["a"]["round_seconds_extrapolated"] / results["b"]["round_seconds"] if "a" in results and \
        "b" in results else float("nan")
    print(f"speedup {ratio:.1f}x noise {rel:.3f}")


if __name__ == "__main__":
    main()
