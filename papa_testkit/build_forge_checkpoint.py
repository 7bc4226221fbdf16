"""Build a random-weight SD1.5-format checkpoint with Forge's own model classes (no ComfyUI needed).

Run with Forge's Python, cwd = FORGE_DIR, this repository and Forge's packages_3rdparty on PYTHONPATH:
    python -m papa_testkit.build_forge_checkpoint OUT.safetensors
The same small UNet as ``build_checkpoint`` (model_channels 320 and context 768, which detection
keys on; two levels, one block each), CLIP-L and the VAE with their real shapes, in the ldm layout
every SD1.5 checkpoint has; Forge's loader detects it as SD1.5.
"""
import json
import os
import sys

import torch

from papa_testkit.build_checkpoint import randomise

UNET = {"in_channels": 4, "model_channels": 320, "out_channels": 4, "num_res_blocks": [1, 1],
        "channel_mult": [1, 2], "num_heads": 8, "num_head_channels": -1, "use_spatial_transformer": True,
        "transformer_depth": [1, 1], "transformer_depth_output": [1, 1, 1, 1], "transformer_depth_middle": 1,
        "context_dim": 768, "use_linear_in_transformer": False, "adm_in_channels": None}


def main(path: str) -> None:
    sys.argv = [sys.argv[0], "--always-cpu"]  # Forge's backend picks its device from the command line at import
    from transformers import CLIPTextConfig, CLIPTextModel

    from backend.nn.unet import IntegratedUNet2DConditionModel
    from backend.nn.vae import IntegratedAutoencoderKL

    repo = os.path.join("backend", "huggingface", "runwayml", "stable-diffusion-v1-5")
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode(False):
        sd = {f"model.diffusion_model.{k}": v for k, v in randomise(IntegratedUNet2DConditionModel(**UNET), gen).items()}
        clip = CLIPTextModel(CLIPTextConfig.from_pretrained(os.path.join(repo, "text_encoder")))
        sd.update({f"cond_stage_model.transformer.{k}": v.half() for k, v in randomise(clip, gen).items()})
        with open(os.path.join(repo, "vae", "config.json"), encoding="utf-8") as f:
            vae_config = {k: v for k, v in json.load(f).items() if not k.startswith("_")}
        vae = IntegratedAutoencoderKL(**vae_config)
        sd.update({f"first_stage_model.{k}": v.half() for k, v in randomise(vae, gen).items()})
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in sd.items()}, path)
    print(f"wrote {path}: {len(sd)} tensors, {sum(v.numel() for v in sd.values()) / 1e6:.1f} M parameters")


if __name__ == "__main__":
    main(sys.argv[1])
