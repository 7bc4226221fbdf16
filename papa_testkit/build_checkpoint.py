"""Build a random-weight SD1.5-format checkpoint that ComfyUI's CheckpointLoaderSimple detects as SD1.5.

Run with ComfyUI importable (``papa_testkit.comfy.server_env(cdir)``, cwd = COMFYUI_DIR):
    python -m papa_testkit.build_checkpoint OUT.safetensors
The UNet keeps what detection keys on (model_channels 320, context 768) but has two levels and one
block per level, so CPU runs are short; CLIP-L and the VAE have their real shapes. Weights are drawn
with std 1/sqrt(fan_in), so activations and images stay in a sensible range.
"""
import math
import sys

import torch


def randomise(module: torch.nn.Module, gen: torch.Generator) -> dict[str, torch.Tensor]:
    out = {}
    for name, p in module.state_dict().items():
        if not p.is_floating_point():
            out[name] = p.clone()
            continue
        if name.endswith("position_ids"):
            out[name] = torch.arange(p.shape[-1]).expand(p.shape).clone().to(p.dtype)
        elif p.ndim >= 2:
            fan_in = math.prod(p.shape[1:])
            out[name] = torch.randn(p.shape, generator=gen) / math.sqrt(fan_in)
        elif "norm" in name or name.endswith("ln_1.weight") or name.endswith("ln_2.weight"):
            out[name] = torch.ones(p.shape) if name.endswith("weight") else torch.zeros(p.shape)
        else:
            out[name] = torch.randn(p.shape, generator=gen) * 0.02
    return out


def main(path: str) -> None:
    sys.argv = [sys.argv[0], "--cpu"]
    import comfy.options

    comfy.options.enable_args_parsing()
    import comfy.ldm.models.autoencoder
    import comfy.sd1_clip
    import comfy.supported_models

    gen = torch.Generator().manual_seed(0)
    unet_config = {
        "context_dim": 768, "model_channels": 320, "use_linear_in_transformer": False, "adm_in_channels": None,
        "use_temporal_attention": False, "use_temporal_resblock": False, "in_channels": 4, "out_channels": 4,
        "channel_mult": [1, 2], "num_res_blocks": [1, 1], "transformer_depth": [1, 1],
        "transformer_depth_output": [1, 1, 1, 1], "transformer_depth_middle": 1, "use_checkpoint": False,
        "image_size": 32, "use_spatial_transformer": True, "legacy": False, "num_heads": 8, "num_head_channels": -1,
    }
    with torch.inference_mode(False):
        cfg = comfy.supported_models.SD15(unet_config)
        cfg.set_inference_dtype(torch.float32, None)
        unet = cfg.get_model({})
        sd = {f"model.{k}": v for k, v in randomise(unet, gen).items() if k.startswith("diffusion_model.")}
        clip = comfy.sd1_clip.SDClipModel(device="cpu", dtype=torch.float32)
        sd.update({f"cond_stage_model.{k}": v.half() for k, v in randomise(clip, gen).items()
                   if k.startswith("transformer.")})
        ddconfig = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                    "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
        vae = comfy.ldm.models.autoencoder.AutoencoderKL(ddconfig=ddconfig, embed_dim=4)
        sd.update({f"first_stage_model.{k}": v.half() for k, v in randomise(vae, gen).items()})
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in sd.items()}, path)
    print(f"wrote {path}: {len(sd)} tensors, {sum(v.numel() for v in sd.values()) / 1e6:.1f} M parameters")


if __name__ == "__main__":
    main(sys.argv[1])
