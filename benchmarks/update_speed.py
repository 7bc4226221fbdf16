"""Update latency and memory on Stable Diffusion 1.5's UNet: the reference way vs the project's default.

    python -m benchmarks.update_speed                      # CPU: 32×32 latent (< 10 minutes on 2 cores)
    python -m benchmarks.update_speed --device cuda --latent 64          # GPU: 512 px SD1.5
    python -m benchmarks.update_speed --device cuda --arch sdxl          # GPU: 1024 px SDXL (128×128 latent)
    COMFYUI_DIR=/path/to/ComfyUI python -m benchmarks.update_speed       # adds (e): through ComfyUI's model

Side by side in one run, each part in its own subprocess (so peak memory is per part), on the same
random-weight UNet built from SD1.5's config (no download):
  (a) reference: exact sum over T = 1000 timesteps, one forward+backward per timestep, batch 1, all
      weights trainable, fp32, one Adam step per image. Timed on --ref-timesteps evenly spaced
      timesteps and extrapolated explicitly to 1000 per image.
  (b) default: the project's default update (its estimator and m, timesteps batched, LoRA only,
      bf16 autocast where the device has bf16 in hardware: GPU, or a CPU with AVX512-BF16/AMX) for
      round 1 (--images new images + round 0's replayed) and round 3 (the steady state, replay
      filling every step). On GPU real rounds, after a warm-up round; on CPU their passes are
      counted exactly and one pass of --chunk pairs is timed without and with gradient, then
      extrapolated explicitly (and, when the default autocasts, also in fp32).
  (c) the default estimator's noise: relative std of the LoRA gradient against the exact sum
      (ε fixed per image, only the timestep draw varies). On CPU the exact sum over 1000 SD1.5
      steps is out of reach, so (c) there is measured on the trained digits model instead (say so).
      The draws run under the default's autocast, the exact sum in fp32.
  (d) the ablation: per (image, t) with gradient, what LoRA-only backward, batching, bf16 autocast
      (where the device has it) and gradient checkpointing each change.
  (e) with COMFYUI_DIR set: (b) again through ComfyUI's own model of the same architecture
      (``ComfyDenoiser``, the LoRA as weight wrappers, as PAPA Update runs it; fp32 weights on CPU,
      fp16 weights with bf16 compute on GPU, as ComfyUI loads them), against the same (a).
The last line is exactly ``speedup <ratio>x noise <relstd>`` ((a)/(b) at steady state).
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
ROOT = Path(__file__).resolve().parents[1]

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

# SD1.5's block structure at toy width: only for smoke-testing this script (tests/test_benchmarks.py)
TINY = dict(SD15, block_out_channels=(32, 32, 64, 64), layers_per_block=1, attention_head_dim=2)
ARCHS = {"sd15": SD15, "sdxl": SDXL, "tiny": TINY}


def latent_side(a) -> int:
    """SDXL is measured at 1024 px (128×128 latent); the others at --latent."""
    return 128 if a.arch == "sdxl" else a.latent


def build(arch: str, device: str):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    cfg = ARCHS[arch]
    with torch.device(device):  # initialised where it runs: SDXL's 2.6 G weights take minutes on a CPU
        return UNet2DConditionModel(**cfg), cfg["cross_attention_dim"]


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
    lat = latent_side(a)
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


class PassCounter:
    """Stands in for the UNet so that the default's update runs in milliseconds and reports exactly how
    many (image, t) forward passes a round makes with and without gradient: those counts depend on the
    configuration and the feedback, never on the network."""

    def __init__(self) -> None:
        from papa_core.lora import LoraConfig
        from papa_core.schedule import DiffusionSchedule

        self.schedule = DiffusionSchedule.scaled_linear()
        self.lora_config = LoraConfig(rank=1, alpha=1.0, targets="attention")
        self.device = torch.device("cpu")
        self.fingerprint = "pass-counter"
        self.p = torch.nn.Parameter(torch.zeros(()))

    def eps(self, x_t, t, cond, lora=True):
        return x_t * (1 + self.p) if lora else x_t

    def lora_parameters(self):
        return [self.p]

    def get_lora_state(self):
        return {"p": self.p.detach().clone()}

    def set_lora_state(self, state):
        with torch.no_grad():
            self.p.copy_(state["p"])


def default_config(a):
    from papa_core.update import update_preset

    objective = {"max_batch": a.chunk, **({"timesteps_per_image": a.m} if a.m else {})}
    overrides = {k: v for k, v in (("steps", a.steps), ("images_per_step", a.images_per_step),
                                   ("autocast", a.autocast)) if v}
    return update_preset("default", objective=objective, **overrides)


def default_autocast(a, device) -> "torch.dtype | None":
    from papa_core.update import resolve_autocast

    return resolve_autocast(default_config(a).autocast, torch.device(device))


def dtype_name(dtype) -> str:
    return "fp32" if dtype is None else str(dtype).replace("torch.", "").replace("bfloat16", "bf16").replace("float16", "fp16")


def run_rounds(a, denoiser, lat: int, cond, rounds: int = 2) -> list:
    """Rounds 0..rounds-1 of --images images (half liked), one default update each; returns (seconds, stats).
    ``cond(n, device)`` builds the conditioning the denoiser takes, batched n."""
    from papa_core.session import SessionStore
    from papa_core.update import update
    import tempfile

    cfg = default_config(a)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        store = SessionStore(tmp)
        s = store.create("speed", denoiser.fingerprint, denoiser.lora_config, denoiser.get_lora_state())
        for r in range(rounds):
            g = torch.Generator().manual_seed(r)
            s.add_round(torch.randn(a.images, 4, lat, lat, generator=g), {k: v.cpu() for k, v in
                        cond(a.images, "cpu").items()}, list(range(a.images)))
            s.record_feedback([1.0, -1.0] * (a.images // 2) + [1.0] * (a.images % 2))
            if a.device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            sync(a.device)
            t0 = time.perf_counter()
            st = update(s, denoiser, cfg, memory=pass_sizer(a, cfg))
            sync(a.device)
            out.append((time.perf_counter() - t0, st))
    return out


def pass_sizer(a, cfg):
    """--memory's pass sizer (as PAPA Update makes it), or None for fixed passes of --chunk pairs."""
    from papa_core.memory import PassSizer, probe_for

    if not a.memory:
        return None
    return PassSizer.start(a.memory, probe_for(torch.device(a.device)), a.max_batch, a.checkpointing,
                           default_pairs=a.chunk, first_pairs=cfg.objective.timesteps_per_image)


def cap_memory(a) -> None:
    """--memory-cap: this process may use at most that many GiB of the GPU (as a smaller card would)."""
    if a.memory_cap and a.device == "cuda":
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, a.memory_cap * 2**30 / total))


def lora_denoiser(a, checkpointing: bool = False):
    from papa_core.denoiser import DiffusersDenoiser
    from papa_core.lora import LoraConfig
    from papa_core.schedule import DiffusionSchedule

    unet, ctx = build(a.arch, a.device)
    if a.device == "cuda" and a.half_weights:
        unet = unet.to(torch.bfloat16)
    d = DiffusersDenoiser(unet, DiffusionSchedule.scaled_linear(), LoraConfig(rank=8, alpha=8.0, targets=a.targets),
                          gradient_checkpointing=checkpointing)
    if a.device == "cuda" and a.half_weights:
        for p in d.lora_parameters():  # train the adapter in fp32 over bf16 base weights
            p.data = p.data.float()
    return d, unet, ctx


def time_pairs(a, d, cond, n: int, grad: bool, autocast=None) -> float:
    """Seconds per (image, t) pair of one forward pass of n pairs through the LoRA'd UNet, as the
    objective makes them: without gradient (θ* or θ), or with gradient + backward into the LoRA."""
    lat = latent_side(a)
    g = torch.Generator().manual_seed(n)
    x = torch.randn(n, 4, lat, lat, generator=g).to(a.device)
    t = torch.randint(0, 1000, (n,), generator=g).to(a.device)
    cond = cond(n, a.device)
    sync(a.device)
    t0 = time.perf_counter()
    with torch.autocast(d.device.type, dtype=autocast, enabled=autocast is not None):
        if grad:
            (d.eps(x, t, cond) - x).pow(2).mean().backward()
        else:
            with torch.no_grad():
                d.eps(x, t, cond)
    sync(a.device)
    for p in d.lora_parameters():
        p.grad = None
    return (time.perf_counter() - t0) / n


def part_default(a) -> dict:
    """(b) The default update, rounds 0..3 of --images images each (half liked) with replay.

    Reported: round 1 (its new images + round 0's replayed) and round 3, the steady state where the
    replayed history fills every step (images_per_step). --b-mode round: the rounds run for real
    and are timed (round 0 warms up). --b-mode pairs (CPU): each round's passes are counted exactly
    (PassCounter), one forward pass of --chunk pairs is timed without and with gradient on the real
    UNet, and the rounds are extrapolated explicitly.
    """
    d, unet, ctx = lora_denoiser(a, a.checkpointing)
    return time_default(a, d, lambda n, dev: cond_for(a.arch, n, ctx, dev), "b")


def time_default(a, d, cond, part: str) -> dict:
    """(b)'s measurement on denoiser ``d`` (diffusers' UNet in (b), ComfyUI's model in (e))."""
    lat = latent_side(a)
    counted = [st for _, st in run_rounds(a, PassCounter(), lat, cond, 4)]
    out = {"part": part, "mode": a.b_mode, "config": default_config(a).to_dict(), "rounds": {}}
    for r in (1, 3):
        st = counted[r]
        out["rounds"][str(r)] = {"timesteps": st.timesteps, "forward_passes": st.forward_passes,
                                 "no_grad_passes": st.forward_passes - st.timesteps, "steps": st.steps,
                                 "images_trained": st.images}
    ac = default_autocast(a, a.device)
    out["lora_params"] = sum(p.numel() for p in d.lora_parameters())
    out["autocast"] = dtype_name(ac)
    if a.b_mode == "round":
        timed = run_rounds(a, d, lat, cond, 4)
        for r in (1, 3):
            sec, st = timed[r]
            assert (st.timesteps, st.forward_passes) == (counted[r].timesteps, counted[r].forward_passes)
            out["rounds"][str(r)]["seconds"] = sec
        out.update(warmup_round_seconds=timed[0][0], peak_gib=peak_memory(a.device))
        last = timed[-1][1]
        out["memory"] = {"mode": a.memory, "cap_gib": a.memory_cap, "pairs_per_pass": last.pairs_per_pass,
                         "checkpointing": last.checkpointing, "oom_retries": sum(st.oom_retries for _, st in timed),
                         "notes": [n for _, st in timed for n in st.memory_notes]}
    else:
        def per_pair(autocast):
            time_pairs(a, d, cond, 2, False, autocast)  # warm-up
            time_pairs(a, d, cond, 2, True, autocast)
            return time_pairs(a, d, cond, a.chunk, False, autocast), time_pairs(a, d, cond, a.chunk, True, autocast)

        ng, gr = per_pair(ac)
        ng32, gr32 = per_pair(None) if ac is not None else (ng, gr)
        opt = torch.optim.AdamW(d.lora_parameters(), lr=1e-3)
        for p in d.lora_parameters():
            p.grad = torch.zeros_like(p)
        t0 = time.perf_counter()
        opt.step()
        adam = time.perf_counter() - t0
        for rd in out["rounds"].values():
            rd["seconds"] = rd["no_grad_passes"] * ng + rd["timesteps"] * gr + rd["steps"] * adam
            rd["seconds_fp32"] = rd["no_grad_passes"] * ng32 + rd["timesteps"] * gr32 + rd["steps"] * adam
        out.update(no_grad_pair_seconds=ng, grad_pair_seconds=gr, adam_step_seconds=adam,
                   no_grad_pair_seconds_fp32=ng32, grad_pair_seconds_fp32=gr32,
                   peak_gib=peak_memory(a.device))
    out["round_seconds"] = out["rounds"]["3"]["seconds"]
    return out


# ComfyUI's UNet configurations (its ldm layout) for the same architectures as ARCHS
COMFY_SD15 = dict(use_checkpoint=False, image_size=32, out_channels=4, use_spatial_transformer=True, legacy=False,
                  adm_in_channels=None, in_channels=4, model_channels=320, num_res_blocks=[2, 2, 2, 2],
                  transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0], channel_mult=[1, 2, 4, 4], transformer_depth_middle=1,
                  use_linear_in_transformer=False, context_dim=768, num_heads=8,
                  transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], use_temporal_attention=False,
                  use_temporal_resblock=False)
COMFY_SDXL = dict(COMFY_SD15, num_classes="sequential", adm_in_channels=2816, num_res_blocks=[2, 2, 2],
                  transformer_depth=[0, 0, 2, 2, 10, 10], channel_mult=[1, 2, 4], transformer_depth_middle=10,
                  use_linear_in_transformer=True, context_dim=2048, num_heads=-1, num_head_channels=64,
                  transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10])
COMFY_TINY = dict(COMFY_SD15, model_channels=32, channel_mult=[1, 2], num_res_blocks=[1, 1], transformer_depth=[1, 1],
                  transformer_depth_output=[1, 1, 1, 1], context_dim=768, num_heads=2)


def comfy_model(a):
    """ComfyUI's own model (``BaseModel``/``SDXL`` in a ``ModelPatcher``) with --arch's architecture and
    random weights (std 1/sqrt(fan_in)), loaded as ComfyUI loads it: fp32 on CPU, fp16 on GPU."""
    import comfy.model_base
    import comfy.model_patcher
    import comfy.supported_models

    unet, cls, family = {"sd15": (COMFY_SD15, comfy.model_base.BaseModel, comfy.supported_models.SD15),
                         "tiny": (COMFY_TINY, comfy.model_base.BaseModel, comfy.supported_models.SD15),
                         "sdxl": (COMFY_SDXL, comfy.model_base.SDXL, comfy.supported_models.SDXL)}[a.arch]
    cfg = family(dict(unet))
    cfg.set_inference_dtype(torch.float16 if a.device == "cuda" else torch.float32, None)
    model = cls(cfg, model_type=comfy.model_base.ModelType.EPS)
    dev = torch.device(a.device)
    g = torch.Generator(dev).manual_seed(0)  # drawn on the device: fast for SDXL on a GPU
    with torch.no_grad():
        for p in model.parameters():
            if p.numel():
                std = 1 / max(1, p[0].numel()) ** 0.5 if p.ndim > 1 else 0.05
                p.copy_(torch.randn(p.shape, generator=g, device=dev) * std)
    return comfy.model_patcher.ModelPatcher(model, dev, torch.device("cpu") if a.device == "cuda" else dev)


def part_comfy(a) -> dict:
    """(e) (b) through ComfyUI's own model, as PAPA Update runs it: ``ComfyDenoiser`` (the LoRA as weight
    wrappers on a training clone). Runs with cwd = COMFYUI_DIR; --b-mode as in (b)."""
    from papa_testkit.pack import load_pack  # ComfyUI's folder is first on the path (comfy_process)

    argv, sys.argv = sys.argv, [sys.argv[0]] + (["--cpu"] if a.device == "cpu" else [])
    import comfy.options

    comfy.options.enable_args_parsing()
    import comfy.model_management

    sys.argv = argv
    import importlib

    pack = load_pack().__name__
    host = importlib.import_module(f"{pack}.nodes.comfy_model")
    LoraConfig = importlib.import_module(f"{pack}.papa_core.lora").LoraConfig
    ComfyDenoiser = importlib.import_module(f"{pack}.nodes.comfy_denoiser").ComfyDenoiser
    conditioning_tensors, inspect_model = host.conditioning_tensors, host.inspect_model

    mp = comfy_model(a)
    info = inspect_model(mp)
    compute = host.training_dtype(mp, torch.device(a.device))  # as PAPA Update decides it
    d = ComfyDenoiser(mp, info, LoraConfig(rank=8, alpha=8.0, targets=a.targets), compute)
    ctx = (COMFY_SDXL if a.arch == "sdxl" else COMFY_SD15)["context_dim"]
    g = torch.Generator().manual_seed(1)
    positive = [[torch.randn(1, 77, ctx, generator=g),
                 {"pooled_output": torch.randn(1, 1280, generator=g)} if a.arch == "sdxl" else {}]]
    lat = latent_side(a)

    def cond(n: int, device: str) -> dict:
        return {k: v.to(device) for k, v in conditioning_tensors(mp, positive, torch.zeros(n, 4, lat, lat)).items()}

    with d.gradient_checkpointing(a.checkpointing):
        out = time_default(a, d, cond, "e")
    out.update(family=info.family, compute_dtype=dtype_name(compute), weights=dtype_name(
        torch.float16 if a.device == "cuda" else None))
    return out


def part_noise(a) -> dict:
    from papa_core.diagnostics import estimator_noise
    from papa_core.objective import ObjectiveConfig

    default = default_config(a).objective  # follows --m
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
        lat = latent_side(a)
        x0 = torch.randn(a.images, 4, lat, lat, generator=g)
        cond = cond_for(a.arch, a.images, ctx, "cpu")
        model = f"{a.arch} UNet (random weights)"
    with torch.no_grad():
        for p in d.lora_parameters():
            p.add_(torch.randn(p.shape, generator=g).to(p.device) * 0.01)
    y = torch.tensor([1.0, -1.0] * (a.images // 2) + [1.0] * (a.images % 2))
    ac = default_autocast(a, d.device)
    _, reports = estimator_noise(d, x0, cond, y, base, [default.estimator], [default.timesteps_per_image], a.draws,
                                 autocast_dtype=ac)
    r = reports[0]
    out = {"part": "c", "model": model, "estimator": r.estimator, "m": r.timesteps_per_image,
           "rel_std": r.rel_std, "mean_cosine": r.mean_cosine, "draws": a.draws, "autocast": dtype_name(ac)}
    if ac is not None:  # autocast's own error: the full default objective, same draw, against fp32
        from papa_core.diagnostics import lora_gradient

        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
        diffs = []
        for s in range(3):
            g32, gac = (lora_gradient(d, x0, cond, y, default, noise, torch.Generator().manual_seed(100 + s), dt)
                        for dt in (None, ac))
            diffs.append(float((gac - g32).norm() / g32.norm()))
        out["autocast_rel_diff"] = diffs
    return out


def part_ablation(a) -> dict:
    """(d) What each choice buys, seconds per (image, timestep) with gradient: LoRA-only backward one
    timestep at a time, --chunk timesteps batched, with bf16 autocast where the device has bf16 in
    hardware, then with gradient checkpointing (fp32). All weights one at a time is (a)."""
    from papa_core.update import native_bf16

    out = {"part": "d", "batch": a.chunk}
    d, unet, ctx = lora_denoiser(a)
    cond = lambda n, dev: cond_for(a.arch, n, ctx, dev)  # noqa: E731
    time_pairs(a, d, cond, 1, True)  # warm-up
    out["lora_unbatched_s"] = sum(time_pairs(a, d, cond, 1, True) for _ in range(2)) / 2
    out["lora_batched_s"] = time_pairs(a, d, cond, a.chunk, True)
    if native_bf16(torch.device(a.device)):
        time_pairs(a, d, cond, 2, True, torch.bfloat16)
        out["lora_batched_bf16_s"] = time_pairs(a, d, cond, a.chunk, True, torch.bfloat16)
    unet.enable_gradient_checkpointing()
    time_pairs(a, d, cond, 2, True)
    out["lora_batched_checkpointing_s"] = time_pairs(a, d, cond, a.chunk, True)
    out["peak_gib"] = peak_memory(a.device)
    return out


def part_process(part: str) -> dict:
    """subprocess.run arguments for a part: a module run from the repository root; part e by path
    from COMFYUI_DIR, with ComfyUI's modules first on the path (as the ComfyUI tests run it)."""
    if part != "e":
        return {"cwd": ROOT, "args": [sys.executable, "-m", "benchmarks.update_speed"]}
    from papa_testkit.comfy import server_env

    cdir = Path(os.environ["COMFYUI_DIR"])
    return {"cwd": cdir, "env": server_env(cdir), "args": [sys.executable, str(ROOT / "benchmarks" / "update_speed.py")]}


def report_default(a, key: str, what: str, rb: dict, ra) -> None:
    """Print (b) or (e): each round's seconds with its arithmetic, peak memory, and the ratios to (a)."""
    for r, rr in rb["rounds"].items():
        how = ("measured" if rb["mode"] == "round" else
               f"extrapolated: {rr['no_grad_passes']} pairs without gradient x {rb['no_grad_pair_seconds']:.3f} s + "
               f"{rr['timesteps']} with gradient x {rb['grad_pair_seconds']:.3f} s (one pass of {a.chunk} pairs "
               f"each) + {rr['steps']} AdamW steps x {rb['adam_step_seconds']:.3f} s")
        if rb["mode"] == "pairs" and rb["autocast"] != "fp32":
            how += (f"; in fp32 {rr['seconds_fp32']:.2f} s ({rb['no_grad_pair_seconds_fp32']:.3f} / "
                    f"{rb['grad_pair_seconds_fp32']:.3f} s per pair)")
        print(f"({key}) {what} ({rb['autocast']}), round {r}: {rr['seconds']:.2f} s ({how}); {rr['images_trained']} "
              f"images trained (with replay), {rr['steps']} steps, {rr['timesteps']} (image, t) pairs with gradient, "
              f"{rr['forward_passes']} forward passes")
    print(f"({key}) peak {rb['peak_gib']:.2f} GiB" + (f"; warm-up round 0: {rb['warmup_round_seconds']:.2f} s"
                                                      if rb["mode"] == "round" else "")
          + (f"; {rb['lora_params']} LoRA parameters" if key == "e" else ""))
    mem = rb.get("memory")
    if mem and mem["mode"]:
        print(f"({key}) memory {mem['mode']!r}" + (f" under a {mem['cap_gib']:g} GiB cap" if mem["cap_gib"] else "")
              + f": {mem['pairs_per_pass']} pairs per pass, checkpointing {mem['checkpointing']}, "
              f"{mem['oom_retries']} out-of-memory retries" + "".join(f"; {n}" for n in mem["notes"][:4]))
    if ra:
        ref = ra["round_seconds_extrapolated"]
        print(f"(a)/({key}): round 1 {ref / rb['rounds']['1']['seconds']:.1f}x, round 3 (steady state"
              f"{', reported below' if key == 'b' else ''}) {ref / rb['round_seconds']:.1f}x")
        if "seconds_fp32" in rb["rounds"]["3"] and rb["autocast"] != "fp32":
            print(f"(a)/({key}) with ({key}) in fp32: round 1 {ref / rb['rounds']['1']['seconds_fp32']:.1f}x, "
                  f"round 3 {ref / rb['rounds']['3']['seconds_fp32']:.1f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--arch", default="sd15", choices=["sd15", "sdxl", "tiny"])
    p.add_argument("--latent", type=int, default=32, help="latent side (32 on CPU; 64 = 512 px)")
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--ref-timesteps", type=int, default=3, help="timesteps actually timed for (a)")
    p.add_argument("--targets", default="attention")
    p.add_argument("--steps", type=int, default=0, help="override the default's steps per round")
    p.add_argument("--m", type=int, default=0, help="override the default's timesteps per image")
    p.add_argument("--images-per-step", type=int, default=0, help="override the default's images per step")
    p.add_argument("--checkpointing", action="store_true", help="gradient checkpointing in (b)")
    p.add_argument("--half-weights", action="store_true", help="bf16 base weights in (b) on GPU")
    p.add_argument("--autocast", choices=["auto", "bf16", "fp16", "none"], help="override the default's autocast "
                   "(auto: bf16 where the device has it in hardware)")
    p.add_argument("--draws", type=int, default=20)
    p.add_argument("--max-batch", type=int, default=64)
    p.add_argument("--chunk", type=int, default=8, help="(image, t) pairs per forward/backward pass in (b) and "
                   "(d), as PAPA Update's pairs_per_pass (default 8): bounds activation memory")
    p.add_argument("--b-mode", choices=["round", "pairs"], help="(b): time a real round, or count its passes "
                   "and time one pass of --chunk pairs (default: pairs on CPU, round on GPU)")
    p.add_argument("--part", choices=["a", "b", "c", "d", "e"], help=argparse.SUPPRESS)
    p.add_argument("--memory", choices=["auto", "low VRAM", "fast"], help="size the passes as PAPA Update's memory "
                   "setting does (default: fixed passes of --chunk pairs)")
    p.add_argument("--memory-cap", type=float, default=0.0, help="GiB of the GPU this process may use (0: all)")
    p.add_argument("--parts", help="which parts to run (d = the ablation, e = (b) through ComfyUI's model; "
                   "default abcd, and e when COMFYUI_DIR is set)")
    a = p.parse_args()
    a.b_mode = a.b_mode or ("round" if a.device == "cuda" else "pairs")
    comfy_dir = os.environ.get("COMFYUI_DIR")
    a.parts = a.parts or ("abcde" if comfy_dir else "abcd")
    if "e" in a.parts and not (comfy_dir and (Path(comfy_dir) / "main.py").exists()):
        raise SystemExit("part e runs through ComfyUI's model: set COMFYUI_DIR to a ComfyUI checkout (with main.py)")
    if a.part:
        cap_memory(a)
        fn = {"a": part_reference, "b": part_default, "c": part_noise, "d": part_ablation, "e": part_comfy}[a.part]
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
        how = part_process(part)
        t0 = time.perf_counter()
        out = subprocess.run([*how.pop("args"), *passthrough, "--part", part], capture_output=True, text=True, **how)
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if out.returncode != 0 or line is None:
            print(out.stdout[-3000:], out.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"part {part} failed")
        results[part] = json.loads(line[7:])
        print(f"part {part} ({time.perf_counter() - t0:.0f}s): {json.dumps(results[part])}", flush=True)
    dev = torch.cuda.get_device_name(0) if a.device == "cuda" else f"CPU ({os.cpu_count()} cores)"
    print(f"\n{a.arch} UNet, {a.latent}x{a.latent} latent, {a.images} images per round, device: {dev}")
    ra, rb, rd = results.get("a"), results.get("b"), results.get("d")
    if ra:
        print(f"(a) reference: {ra['round_seconds_extrapolated']:.1f} s/round (extrapolated: {ra['timed_timesteps']} "
              f"timed timesteps x {ra['seconds_per_timestep']:.3f} s, x1000 x {a.images} images, + {a.images} Adam "
              f"steps x {ra['adam_step_seconds']:.2f} s), peak {ra['peak_gib']:.2f} GiB")
    for key, what in (("b", "default"), ("e", "default through ComfyUI's model")):
        if key in results:
            report_default(a, key, what, results[key], ra)
    if rd:
        full = f"{ra['seconds_per_timestep']:.3f}" if ra else "?"
        line = (f"(d) s per (image, t) with gradient: all weights, one at a time {full}; LoRA only, one at a time "
                f"{rd['lora_unbatched_s']:.3f}; LoRA only, {rd['batch']} batched {rd['lora_batched_s']:.3f}")
        if "lora_batched_bf16_s" in rd:
            line += f" (fp32; with bf16 autocast {rd['lora_batched_bf16_s']:.3f})"
        print(line + f"; + gradient checkpointing {rd['lora_batched_checkpointing_s']:.3f}; peak {rd['peak_gib']:.2f} GiB")
    rel = results.get("c", {}).get("rel_std", float("nan"))
    if "c" in results:
        rc = results["c"]
        print(f"(c) noise of {rc['estimator']} m={rc['m']} ({rc['autocast']}) on {rc['model']}: rel. std {rel:.3f}, "
              f"mean cosine {rc['mean_cosine']:.3f} over {rc['draws']} draws" +
              (f"; {rc['autocast']} against fp32 on the same draw (full default objective): rel. diff "
               f"{min(rc['autocast_rel_diff']):.3f}-{max(rc['autocast_rel_diff']):.3f}" if "autocast_rel_diff" in rc else ""))
    ratio = ra["round_seconds_extrapolated"] / rb["round_seconds"] if ra and rb else float("nan")
    print(f"speedup {ratio:.1f}x noise {rel:.3f}")


if __name__ == "__main__":
    main()
