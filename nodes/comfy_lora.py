"""Sampling with the session's LoRA through ComfyUI's own LoRA patching, on a clone of the host's MODEL.

The LoRA becomes ComfyUI's weight patches exactly as a loaded LoRA file does, so PAPA's images
equal those of its exported file and cost what native sampling costs; the host's MODEL is untouched.
"""
from __future__ import annotations

from typing import Mapping

import torch

from ..papa_core.lora import LoraConfig
from ..papa_core.lora_io import lora_to_kohya
from .comfy_denoiser import PAPA_PATCHES, strip_papa
from ..papa_core.host_model import ModelInfo, check_lora_state

def with_lora(model, state: Mapping[str, torch.Tensor], config: LoraConfig, info: ModelInfo):
    """A clone of ``model`` carrying the LoRA ``state`` exactly as ComfyUI applies a loaded LoRA file.

    The patches are built from the very tensors an fp32 export writes (``lora_to_kohya``) and added
    by ComfyUI's own ``load_lora_for_models`` (what LoraLoaderModelOnly calls), so sampling uses the
    same weight arithmetic and dtype handling, at the native cost (weights patched once per load,
    not on every forward), and equals ``LoraLoaderModelOnly(export) → KSampler`` bit for bit. Any
    PAPA LoRA already on ``model`` is replaced, not stacked; the host's MODEL is untouched.
    """
    import comfy.sd

    check_lora_state(state, info.lora_targets(config), config)
    base = model.clone()
    strip_papa(base)
    name_map = info.export_name_map()
    tensors = lora_to_kohya(state, config, name_map.__getitem__ if name_map else None)
    patched, _ = comfy.sd.load_lora_for_models(base, None, tensors, 1.0, 0)
    before = {id(p[1]) for ps in base.patches.values() for p in ps}
    patched.model_options[PAPA_PATCHES] = sorted({id(p[1]) for ps in patched.patches.values() for p in ps} - before)
    return patched
