"""What PAPA needs to know of ComfyUI's MODEL (a ``ModelPatcher``), and the host's policies for it.

``inspect_model`` checks that a MODEL is a supported UNet and maps its modules: the session's
``LoraState`` uses diffusers module paths (kohya's naming for SD1.x/2.x files); ComfyUI's UNet uses
ldm paths, and ``ModelInfo`` holds the map between them (from ``comfy.utils.unet_to_diffusers``).
Here too: the base model's fingerprint, the conditioning tensors a CONDITIONING produces, the
empty latent of a batch, and the device policy (training dtype, memory readings) that PAPA Update
and the benchmarks share. The LoRA itself lives on clones: ``comfy_lora`` (sampling) and
``comfy_denoiser`` (training).
"""
from __future__ import annotations

import logging
import weakref
from typing import Optional

import torch

from ..papa_core.denoiser import fingerprint_tensors
from ..papa_core.errors import PapaError
from ..papa_core.host_model import UNSUPPORTED_HINT, ModelInfo

log = logging.getLogger("papa")


# supported_models class name → (base model id for LoRA metadata, kohya module naming)
FAMILIES: dict[str, tuple[str, str]] = {
    "SD15": ("sd15", "diffusers"),
    "SD20": ("sd21", "diffusers"),
    "SD21UnclipL": ("sd21", "diffusers"),
    "SD21UnclipH": ("sd21", "diffusers"),
    "SDXL": ("sdxl", "ldm"),
    "SDXLRefiner": ("sdxl", "ldm"),
    "SSD1B": ("sdxl", "ldm"),
    "Segmind_Vega": ("sdxl", "ldm"),
}


def inspect_model(model) -> ModelInfo:
    """Check that ``model`` (a ModelPatcher) is a supported UNet and map its modules; raises PapaError."""
    import comfy.model_sampling
    import comfy.utils

    base = getattr(model, "model", None)
    config = getattr(base, "model_config", None)
    family = type(config).__name__ if config is not None else type(base).__name__
    ms = model.get_model_object("model_sampling")
    if family not in FAMILIES:
        raise PapaError(f"{family} models are not supported yet. {UNSUPPORTED_HINT}")
    # ComfyUI builds model_sampling as class X(<schedule>, <prediction>); subclasses (LCM, X0, EDM,
    # distilled schedules) change the maths, so the exact classes are required.
    mro = type(ms).__mro__[1:]
    pred = next((c for c in mro if issubclass(c, comfy.model_sampling.EPS)), None)
    sched = next((c for c in mro if issubclass(c, comfy.model_sampling.ModelSamplingDiscrete)), None)
    if pred is comfy.model_sampling.V_PREDICTION:
        prediction = "v"
    elif pred is comfy.model_sampling.EPS:
        prediction = "eps"
    else:
        name = pred.__name__ if pred is not None else type(ms).__name__
        raise PapaError(f"this {family} model predicts {name}, not ε or v. {UNSUPPORTED_HINT}")
    if sched is not comfy.model_sampling.ModelSamplingDiscrete or ms.sigmas.numel() < 2:
        name = sched.__name__ if sched is not None else type(ms).__name__
        raise PapaError(f"the model's sampling schedule ({name}) is not a plain DDPM schedule (LCM, EDM or "
                        f"continuous schedules are not supported yet). {UNSUPPORTED_HINT}")
    unet_config = getattr(config, "unet_config", {})
    dmap = comfy.utils.unet_to_diffusers(unet_config)
    if not dmap:
        raise PapaError(f"cannot map the modules of this {family} UNet. {UNSUPPORTED_HINT}")
    ldm_of = {d[: -len(".weight")]: l[: -len(".weight")] for d, l in dmap.items() if d.endswith(".weight")}
    modules = dict(base.diffusion_model.named_modules())
    shapes = {}
    for d, l in ldm_of.items():
        m = modules.get(l)
        if m is not None and isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) and hasattr(m, "weight_function"):
            shapes[d] = tuple(m.weight.shape)
    base_model, naming = FAMILIES[family]
    return ModelInfo(family, base_model, naming, ldm_of, shapes, prediction)


_FINGERPRINTS: "weakref.WeakKeyDictionary[torch.nn.Module, dict]" = weakref.WeakKeyDictionary()


def base_fingerprint(model, info: ModelInfo) -> str:
    """Identify the base checkpoint: architecture, schedule and sampled UNet weights.

    Weights come from ModelPatcher's backup where another patch (e.g. a LoraLoader upstream) is
    currently baked in, so the fingerprint does not depend on which clone was loaded last. Cached
    per loaded UNet module and sampling object (a new checkpoint is a new module), so generating a
    batch does not re-read weights from the GPU every time.
    """
    ms = model.get_model_object("model_sampling")
    cache = _FINGERPRINTS.setdefault(model.model, {})
    key = (type(ms).__name__, info.prediction, float(ms.sigmas.double().sum()))
    if key in cache:
        return cache[key]
    backup = getattr(model, "backup", {}) or {}

    def tensors():
        for name, p in model.model.diffusion_model.named_parameters():
            key = f"diffusion_model.{name}"
            yield name, (backup[key].weight if key in backup else p)

    header = {"family": info.family, "unet_config": getattr(model.model.model_config, "unet_config", {}),
              "prediction": info.prediction, "sigmas_sum": float(ms.sigmas.double().sum())}
    cache[key] = fingerprint_tensors(tensors(), header)
    return cache[key]


def training_dtype(model, device: torch.device) -> Optional[torch.dtype]:
    """The dtype PAPA Update computes in over ``model``'s weights on ``device``: bf16 over fp16 weights on a
    GPU that has it (fp16 weights train badly; ComfyUI's own nodes_train does the same), else theirs."""
    import comfy.model_management

    if device.type == "cuda" and model.model.get_dtype() == torch.float16 and \
            comfy.model_management.should_use_bf16(device):
        return torch.bfloat16
    return None


def memory_probe(device: torch.device):
    """The update's memory readings on ComfyUI's device: free memory as ComfyUI counts it (its own
    cache included), peaks from torch's allocator; nothing on the CPU."""
    import comfy.model_management

    from ..papa_core.memory import CudaProbe, NoProbe

    if device.type != "cuda":
        return NoProbe()
    return CudaProbe(device, free=lambda: comfy.model_management.get_free_memory(device))


def conditioning_tensors(model, positive, latent: torch.Tensor) -> dict[str, torch.Tensor]:
    """The UNet inputs a CONDITIONING produces, batched like ``latent`` [B, C, h, w] — as ComfyUI's
    samplers build them (SD: ``c_crossattn`` [B, 77·k, D]; SDXL adds ``y`` [B, 2816] with the sizes).

    Only the first conditioning entry is used; area, mask and strength options are not part of
    what PAPA learns (a warning says so).
    """
    import comfy.model_management
    import comfy.sampler_helpers
    import comfy.samplers

    if not positive:
        raise PapaError("the positive conditioning is empty; connect a CLIP Text Encode node")
    conds = comfy.sampler_helpers.convert_cond(positive)
    if len(conds) > 1:
        log.warning("PAPA: the positive conditioning has %d entries; only the first is recorded for training",
                    len(conds))
    ignored = [k for k in ("area", "mask", "strength", "control", "gligen") if k in conds[0]]
    if ignored:
        log.warning("PAPA: conditioning options %s are ignored when training", ignored)
    device = comfy.model_management.intermediate_device()
    conds = comfy.samplers.encode_model_conds(model.model.extra_conds, conds[:1], latent, device, "positive")
    b = latent.shape[0]
    out = {}
    for k, v in conds[0]["model_conds"].items():
        c = v.process_cond(batch_size=b, area=None).cond
        if isinstance(c, torch.Tensor):
            out[k] = c.detach().to("cpu", torch.float32)
    if not out:
        raise PapaError("the conditioning produced no UNet inputs; connect a CLIP Text Encode node")
    return out

def empty_latent(model, batch_size: int, width: int, height: int) -> torch.Tensor:
    """The zero latent [B, C, height/r, width/r] of ``model``'s latent space, as its empty-latent node
    makes it (C and the VAE's downscale r from the model's latent format: 4 and 8 for SD and SDXL)."""
    fmt = model.model.latent_format
    channels = getattr(fmt, "latent_channels", 4)
    ratio = getattr(fmt, "spacial_downscale_ratio", 8)
    return torch.zeros([batch_size, channels, height // ratio, width // ratio])
