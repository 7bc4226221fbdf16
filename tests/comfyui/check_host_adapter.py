"""In-process checks of the host adapter (nodes/comfy_model.py, comfy_denoiser.py, comfy_lora.py) on tiny
ComfyUI models (SD1.5, SD2 v-prediction, SDXL).

Run by test_host_adapter.py as a subprocess (cwd = COMFYUI_DIR, ``papa_testkit.comfy.server_env(cdir)``:
ComfyUI's own top-level modules first on the path, and never in the test process). Prints one JSON
object with the measured errors; the test asserts.
Everything runs inside ``torch.inference_mode()``, as ComfyUI runs nodes.
"""
import json
import logging
import os
import sys
from pathlib import Path

import torch

from papa_testkit.pack import load_pack

sys.argv = [sys.argv[0], "--cpu"]


def tiny(kind: str):
    import comfy.model_base
    import comfy.model_patcher
    import comfy.supported_models

    common = {"in_channels": 4, "out_channels": 4, "model_channels": 32, "channel_mult": [1, 2],
              "num_res_blocks": [1, 1], "transformer_depth": [1, 1], "transformer_depth_output": [1, 1, 1, 1],
              "transformer_depth_middle": 1, "use_checkpoint": False, "image_size": 32, "use_spatial_transformer": True,
              "legacy": False, "use_temporal_attention": False, "use_temporal_resblock": False}
    if kind == "sd15":
        cfg = comfy.supported_models.SD15(dict(common, context_dim=64, use_linear_in_transformer=False,
                                               adm_in_channels=None, num_heads=4, num_head_channels=-1))
        mtype = comfy.model_base.ModelType.EPS
        cls = comfy.model_base.BaseModel
    elif kind == "sd2v":
        # SD2/SDXL force num_head_channels 64: 64 model channels give 1 and 2 heads
        cfg = comfy.supported_models.SD20(dict(common, model_channels=64, context_dim=64, use_linear_in_transformer=True,
                                               adm_in_channels=None, num_heads=-1, num_head_channels=16))
        mtype = comfy.model_base.ModelType.V_PREDICTION
        cls = comfy.model_base.BaseModel
    else:
        cfg = comfy.supported_models.SDXL(dict(common, model_channels=64, context_dim=64, use_linear_in_transformer=True,
                                               adm_in_channels=2816, num_classes="sequential", num_heads=-1, num_head_channels=16))
        mtype = comfy.model_base.ModelType.EPS
        cls = comfy.model_base.SDXL
    cfg.set_inference_dtype(torch.float32, None)
    model = cls(cfg, model_type=mtype)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.numel() == 0:
                continue
            fan_in = max(1, p[0].numel()) if p.ndim > 1 else 1
            p.copy_(torch.randn(p.shape, generator=g) / fan_in ** 0.5 if p.ndim > 1
                    else torch.randn(p.shape, generator=g) * 0.05)
    return comfy.model_patcher.ModelPatcher(model, torch.device("cpu"), torch.device("cpu"))


def conditioning(kind: str, b: int):
    g = torch.Generator().manual_seed(1)
    c = torch.randn(1, 77, 64, generator=g)
    extra = {"pooled_output": torch.randn(1, 1280, generator=g)} if kind == "sdxl" else {}
    return [[c, extra]]


def check(kind: str, pack) -> dict:
    import comfy.sd
    from comfyui_papa.nodes.comfy_denoiser import ComfyDenoiser
    from comfyui_papa.nodes.comfy_lora import with_lora
    from comfyui_papa.nodes.comfy_model import conditioning_tensors, inspect_model
    from comfyui_papa.papa_core.lora import UP, LoraConfig, init_lora_state
    from comfyui_papa.papa_core.lora_io import export_lora

    res = {}
    mp = tiny(kind)
    info = inspect_model(mp)
    res["family"], res["prediction"], res["naming"] = info.family, info.prediction, info.kohya_naming
    b = 3
    x0 = torch.randn(b, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    cond = conditioning_tensors(mp, conditioning(kind, b), x0)
    res["cond_shapes"] = {k: list(v.shape) for k, v in cond.items()}
    t = torch.tensor([3, 500, 990])
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(3))
    cfg = LoraConfig(rank=4, alpha=4.0, targets="attention+conv", init_seed=0)
    targets = info.lora_targets(cfg)
    res["lora_modules"] = len(targets)
    host_ref = mp.model.apply_model(x0 + 0.5 * noise, torch.full((b,), 0.5), **cond).clone()

    with torch.inference_mode(False):
        den = ComfyDenoiser(mp, info, cfg)
        a = den._a_bar[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        # 1. θ* ε against a direct call of the UNet on the DDPM-scaled input
        with torch.no_grad():
            eps_base = den.eps(x_t, t, cond, lora=False)
            raw = mp.model.diffusion_model(x_t, t.float(), context=cond["c_crossattn"], y=cond.get("y"))
            direct = raw if info.prediction == "eps" else a.sqrt() * raw + (1 - a).sqrt() * x_t
        res["eps_err"] = float((eps_base - direct).abs().max())
        # 2. a non-zero LoRA: trained wrappers = frozen snapshot clone
        state = init_lora_state(targets, cfg)
        state = {k: (torch.randn(v.shape, generator=torch.Generator().manual_seed(4)) * 0.05 if k.endswith(UP) else v)
                 for k, v in state.items()}
        den.set_lora_state(state)
        with torch.no_grad():
            eps_lora = den.eps(x_t, t, cond)
        res["lora_effect"] = float((eps_lora - eps_base).abs().max())
        snap = with_lora(mp, state, cfg, info)
        import comfy.model_management

        comfy.model_management.load_models_gpu([snap])
        with torch.no_grad():
            x = x_t / a.sqrt()
            sig = den._sigmas[t]
            eps_snap = (x - snap.model.apply_model(x, sig, **cond)) / sig.view(-1, 1, 1, 1)
        res["snapshot_err"] = float((eps_snap - eps_lora).abs().max())
        # 3. exported file through ComfyUI's own LoRA loader = the snapshot
        path = Path(os.environ["PAPA_CHECK_TMP"]) / f"{kind}.safetensors"
        export_lora(path, state, cfg, name_map=(info.export_name_map() or {}).get if info.kohya_naming == "ldm" else None,
                    base_model=info.base_model)
        import comfy.utils

        sd = comfy.utils.load_torch_file(str(path))
        not_loaded = []
        handler = logging.Handler()
        handler.emit = lambda rec: not_loaded.append(rec.getMessage()) if "not loaded" in rec.getMessage() else None
        logging.getLogger().addHandler(handler)
        loaded, _ = comfy.sd.load_lora_for_models(mp, None, sd, 1.0, 0.0)
        logging.getLogger().removeHandler(handler)
        res["keys_not_loaded"] = len(not_loaded)
        comfy.model_management.load_models_gpu([loaded])
        with torch.no_grad():
            eps_file = (x - loaded.model.apply_model(x, sig, **cond)) / sig.view(-1, 1, 1, 1)
        res["export_err"] = float((eps_file - eps_lora).abs().max())
        # sampling uses ComfyUI's own LoRA patches: the snapshot is the loaded file, bit for bit, with no
        # per-forward wrapper; a PAPA LoRA on the input MODEL is replaced, not stacked
        res["snapshot_equals_file"] = bool(torch.equal(eps_snap, eps_file))
        res["snapshot_wrappers"] = sum(len(v) for v in snap.weight_wrapper_patches.values())
        again = with_lora(snap, state, cfg, info)
        res["patches_replaced"] = (set(again.patches) == set(snap.patches) == set(loaded.patches)
                                   and all(len(again.patches[k]) == 1 for k in again.patches))
        # 4. gradients reach every LoRA tensor, and checkpointing does not change them
        def grads(ckpt: bool):
            for p in den.lora_parameters():
                p.grad = None
            with den.gradient_checkpointing(ckpt):
                loss = (den.eps(x_t, t, cond) - noise).pow(2).mean()
                loss.backward()
            return [p.grad.clone() for p in den.lora_parameters()]
        calls = []
        hook = mp.model.diffusion_model.input_blocks[1][0].in_layers[2].register_forward_hook(lambda *a: calls.append(1))
        g0 = grads(False)
        n_plain = len(calls)
        g1 = grads(True)
        hook.remove()
        res["ckpt_recomputes"] = len(calls) - 2 * n_plain  # extra forwards of a block in backward
        res["grad_all_finite_nonzero"] = all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in g0)
        # ComfyUI's weights require grad; backward must not reach them (compute, and a model-sized .grad left
        # on the host's MODEL)
        res["base_params_with_grad"] = sum(p.grad is not None for p in mp.model.parameters())
        res["ckpt_grad_err"] = max(float((a_ - b_).abs().max() / (a_.abs().max() + 1e-12)) for a_, b_ in zip(g0, g1))
    # 5. the host's MODEL is untouched
    import comfy.model_management

    comfy.model_management.load_models_gpu([mp])
    host_after = mp.model.apply_model(x0 + 0.5 * noise, torch.full((b,), 0.5), **cond)
    res["host_unchanged"] = bool(torch.equal(host_ref, host_after))
    return res


def main():
    import comfy.options

    comfy.options.enable_args_parsing()
    logging.basicConfig(level=logging.WARNING)
    pack = load_pack()
    out = {}
    with torch.inference_mode():
        for kind in os.environ.get("PAPA_CHECK_KINDS", "sd15,sd2v,sdxl").split(","):
            out[kind] = check(kind, pack)
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
