"""What PAPA needs to know of Forge's loaded model, and the session's LoRA as Forge's own patches.

Forge keeps the checkpoint's UNet as ``sd_model.forge_objects_original.unet`` (a ``ModelPatcher`` over
a ``KModel``, ldm module names, weights loaded under ``torch.inference_mode``). Sampling with the
session's LoRA goes through ``with_lora``: the very tensors an fp32 export holds, turned into patches
by Forge's ``load_lora`` and added to a clone of the UNet patcher by ``add_patches`` — what
``<lora:name:1>`` in a prompt does — so the exported file reproduces the session's images.
"""
from __future__ import annotations

import logging
import weakref
from typing import Mapping

import torch

from papa_core.denoiser import fingerprint_tensors
from papa_core.errors import PapaError
from papa_core.host_model import UNSUPPORTED_HINT, ModelInfo, check_lora_state
from papa_core.lora import LoraConfig
from papa_core.lora_io import lora_to_kohya
from papa_core.schedule import DiffusionSchedule

log = logging.getLogger("papa")

# Forge's engine class → (family, base model id for LoRA metadata, kohya module naming)
ENGINES: dict[str, tuple[str, str, str]] = {
    "StableDiffusion": ("SD15", "sd15", "diffusers"),
    "StableDiffusion2": ("SD20", "sd21", "diffusers"),
    "StableDiffusionXL": ("SDXL", "sdxl", "ldm"),
}
PAPA_LORA = "papa-session"  # the name Forge's patch list shows for the session's LoRA


def base_unet(sd_model):
    """The checkpoint's own UNet patcher (no prompt LoRA), with Forge's weights restored to the base
    (a LoRA Forge merged in for the last image is taken out again by its own ``refresh_loras``)."""
    unet = sd_model.forge_objects_original.unet
    unet.refresh_loras()
    return unet


def inspect_model(sd_model) -> ModelInfo:
    """Check that Forge's ``sd_model`` is a supported ε/v DDPM UNet and map its modules; raises PapaError."""
    from huggingface_guess.utils import unet_to_diffusers

    from backend.modules.k_prediction import Prediction

    engine = type(sd_model).__name__
    if engine not in ENGINES:
        raise PapaError(f"{engine} models are not supported yet. {UNSUPPORTED_HINT}")
    family, base_model, naming = ENGINES[engine]
    kmodel = sd_model.forge_objects_original.unet.model
    predictor = kmodel.predictor
    if type(predictor) is not Prediction or predictor.prediction_type not in ("epsilon", "v_prediction"):
        raise PapaError(f"this {family} model's sampling ({type(predictor).__name__}, "
                        f"{getattr(predictor, 'prediction_type', '?')}) is not a plain ε/v DDPM schedule. {UNSUPPORTED_HINT}")
    unet = kmodel.diffusion_model
    dmap = unet_to_diffusers(dict(unet.config))
    ldm_of = {d[: -len(".weight")]: l[: -len(".weight")] for d, l in dmap.items() if d.endswith(".weight")}
    modules = dict(unet.named_modules())
    shapes = {d: tuple(m.weight.shape) for d, l in ldm_of.items()
              if (m := modules.get(l)) is not None and type(m).__name__ in ("Linear", "Conv2d")
              and getattr(m, "weight", None) is not None}
    prediction = "v" if predictor.prediction_type == "v_prediction" else "eps"
    return ModelInfo(family, base_model, naming, ldm_of, shapes, prediction)


def schedule(sd_model) -> DiffusionSchedule:
    return DiffusionSchedule.from_sigmas(sd_model.forge_objects_original.unet.model.predictor.sigmas)


_FINGERPRINTS: "weakref.WeakKeyDictionary[torch.nn.Module, str]" = weakref.WeakKeyDictionary()


def base_fingerprint(sd_model, info: ModelInfo) -> str:
    """Identify the base checkpoint (architecture, schedule, sampled UNet weights), read from the
    restored base weights; cached per loaded UNet module."""
    kmodel = base_unet(sd_model).model
    if kmodel not in _FINGERPRINTS:
        sigmas = kmodel.predictor.sigmas
        header = {"family": info.family, "unet_config": dict(kmodel.diffusion_model.config),
                  "prediction": info.prediction, "sigmas_sum": float(sigmas.double().sum())}
        _FINGERPRINTS[kmodel] = fingerprint_tensors(kmodel.diffusion_model.named_parameters(), header)
    return _FINGERPRINTS[kmodel]


def with_lora(unet, state: Mapping[str, torch.Tensor], config: LoraConfig, info: ModelInfo):
    """A clone of Forge's UNet patcher ``unet`` carrying the LoRA ``state`` as Forge applies a LoRA file.

    The patches come from the tensors an fp32 export writes (``lora_to_kohya``) through Forge's own
    ``load_lora`` and ``add_patches`` at strength 1, which is what ``<lora:name:1>`` runs; ``unet`` is
    not changed.
    """
    from backend.patcher.lora import load_lora, model_lora_keys_unet

    check_lora_state(state, info.lora_targets(config), config)
    name_map = info.export_name_map()
    tensors = lora_to_kohya(state, config, name_map.__getitem__ if name_map else None)
    patches, unmatched = load_lora(tensors, model_lora_keys_unet(unet.model, {}))
    if unmatched:
        raise PapaError(f"{len(unmatched)} LoRA tensors match no layer of Forge's UNet (e.g. {sorted(unmatched)[:2]})")
    patched = unet.clone()
    patched.add_patches(filename=PAPA_LORA, patches=patches, strength_patch=1.0)
    return patched


def conditioning_tensors(sd_model, cond, batch_size: int) -> dict[str, torch.Tensor]:
    """The UNet inputs Forge's sampler gives the positive prompt at the first step, batched [B, ...]:
    ``c_crossattn`` [B, 77·k, D], SDXL adds ``y`` [B, 2816] — the names ComfyUI's glue records too.

    ``cond`` is ``p.c`` (Forge's scheduled, composable conditioning); with ``AND`` in a prompt, the
    first part is what PAPA learns from.
    """
    from modules.prompt_parser import reconstruct_multicond_batch

    parts, tensor = reconstruct_multicond_batch(cond, 0)
    if any(len(ps) > 1 for ps in parts):
        log.warning("PAPA: a prompt with AND: only its first part is recorded for training")
    first = torch.tensor([ps[0][0] for ps in parts])
    out = {"c_crossattn": tensor["crossattn"], "y": tensor["vector"]} if isinstance(tensor, dict) else {"c_crossattn": tensor}
    out = {k: v[first.to(v.device)].detach().to("cpu", torch.float32).clone() for k, v in out.items()}
    if out["c_crossattn"].shape[0] != batch_size:
        raise PapaError(f"the prompt conditioning has {out['c_crossattn'].shape[0]} entries for {batch_size} images")
    return out
