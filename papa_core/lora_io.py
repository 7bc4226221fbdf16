"""LoRA files in kohya's format — what ComfyUI's LoraLoader, A1111/Forge and diffusers all read.

Keys, per adapted module (``lora_unet_`` + the module path with dots as underscores)::

    lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight  [r, in] / [r, in, kh, kw]
    lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight    [out, r] / [out, r, 1, 1]
    lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.alpha             scalar

By default the module path is the diffusers one (kohya's own naming for SD1.x/2.x); a host can
pass ``name_map`` (e.g. diffusers → ldm names for SDXL). peft's ``lora_A/lora_B`` naming is never
written: ComfyUI 0.3.64 maps none of those keys.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable, Iterable, Mapping, Optional

import torch

from .errors import LoraFileError, SessionMismatch, StorageError
from .fsio import atomic_save_safetensors
from .lora import DOWN, UP, LoraConfig, LoraState, module_names

PREFIX = "lora_unet_"
# (base model, prediction) → kohya's ss_base_model_version, the SAI model spec's architecture id (a LoRA
# adds "/lora"), its native resolution; written as sd-scripts writes them, so LoRA managers file it right
BASES: dict[tuple[str, str], tuple[str, str, str]] = {
    ("sd15", "eps"): ("sd_v1", "stable-diffusion-v1", "512x512"),
    ("sd21", "eps"): ("sd_v2", "stable-diffusion-v2-512", "512x512"),
    ("sd21", "v"): ("sd_v2_v", "stable-diffusion-v2-768-v", "768x768"),
    ("sdxl", "eps"): ("sdxl_base_v1-0", "stable-diffusion-xl-v1-base", "1024x1024"),
}
PREDICTION_TYPES = {"eps": "epsilon", "v": "v"}
SGM = "https://github.com/Stability-AI/generative-models"  # the model spec's implementation id of SDXL LoRAs


def base_metadata(base_model: Optional[str], prediction: Optional[str]) -> dict[str, str]:
    """kohya / SAI model spec fields naming the base a LoRA is for; empty where it is not known. SD1.x
    and SDXL are ε-models here, SD2.x may be either (v: the 768-v checkpoints)."""
    if prediction is None and base_model in ("sd15", "sdxl"):
        prediction = "eps"
    known = BASES.get((base_model, prediction))
    if known is None:
        return {}
    version, architecture, resolution = known
    return {"ss_base_model_version": version, "ss_v2": str(base_model == "sd21"),
            "modelspec.architecture": architecture + "/lora",
            "modelspec.implementation": SGM if base_model == "sdxl" else "diffusers",
            "modelspec.resolution": resolution, "modelspec.prediction_type": PREDICTION_TYPES[prediction]}


def kohya_name(module: str) -> str:
    return PREFIX + module.replace(".", "_")


def lora_to_kohya(state: Mapping[str, torch.Tensor], config: LoraConfig,
                  name_map: Optional[Callable[[str], str]] = None,
                  dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """LoraState (diffusers module paths) → kohya tensors."""
    out: dict[str, torch.Tensor] = {}
    for m in module_names(state):
        key = kohya_name(name_map(m) if name_map else m)
        if key in out or f"{key}.{DOWN}" in out:
            raise LoraFileError(f"two modules map to the same kohya key {key}")
        out[f"{key}.{DOWN}"] = state[f"{m}.{DOWN}"].detach().to("cpu", dtype).contiguous()
        out[f"{key}.{UP}"] = state[f"{m}.{UP}"].detach().to("cpu", dtype).contiguous()
        out[f"{key}.alpha"] = torch.tensor(float(config.alpha), dtype=torch.float32)
    return out


def export_lora(path: str | os.PathLike, state: Mapping[str, torch.Tensor], config: LoraConfig, *,
                name_map: Optional[Callable[[str], str]] = None, base_model: Optional[str] = None,
                papa_metadata: Optional[Mapping] = None, dtype: torch.dtype = torch.float32,
                title: Optional[str] = None, prediction: Optional[str] = None) -> Path:
    """Write a kohya LoRA file atomically; returns its path.

    Args:
        path: target ``.safetensors`` path.
        state, config: the session's adapter.
        name_map: diffusers module path → host module path (ldm names for SDXL), or None.
        base_model: "sd15", "sd21", "sdxl" (→ ``ss_base_model_version`` and the model spec's fields) or
            None if unknown.
        prediction: the base's "eps" or "v" (tells SD2.x 768-v from SD2.x 512), or None if unknown.
        papa_metadata: PAPA's own fields: rounds, labels, algorithm, hyperparameters.
        dtype: tensor dtype in the file (float32 keeps exports bit-faithful; float16 halves the size).
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise LoraFileError(f"LoRA files must end in .safetensors, got {path.name!r}")
    tensors = lora_to_kohya(state, config, name_map, dtype)
    meta = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(config.rank),
        "ss_network_alpha": str(float(config.alpha)),
        "ss_output_name": title or path.stem,
        "ss_training_comment": "trained with ComfyUI-PAPA (online preference alignment from thumbs up/down)",
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.title": title or path.stem,
        "modelspec.date": time.strftime("%Y-%m-%d"),
        "papa_lora_config": json.dumps(config.to_dict()),
    }
    meta.update(base_metadata(base_model, prediction))
    for k, v in (papa_metadata or {}).items():
        meta[k if k.startswith("papa_") else f"papa_{k}"] = v if isinstance(v, str) else json.dumps(v)
    try:
        atomic_save_safetensors(path, tensors, meta)
    except OSError as e:
        raise StorageError(f"cannot write {path} ({e.strerror or e}): make the folder writable and free some disk "
                           "space, or choose another filename") from e
    return path


def read_lora_file(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Load tensors and metadata, with a clear error for anything that is not a safetensors file."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise LoraFileError(f"LoRA file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
        tensors = load_file(str(path))
    except Exception as e:  # safetensors raises several types for truncated / foreign files
        raise LoraFileError(f"{path.name} is not a readable safetensors file ({e}); re-export it") from e
    return tensors, meta


def import_lora(path: str | os.PathLike, model_modules: Iterable[str], config: LoraConfig,
                name_map: Optional[Callable[[str], str]] = None) -> LoraState:
    """Read a kohya LoRA file back into a LoraState for a model whose adapted modules are ``model_modules``.

    A file with another rank, or modules the model's adapter lacks, is refused (SessionMismatch).
    A different alpha is folded into the up weights so that ΔW is unchanged.
    """
    tensors, _ = read_lora_file(path)
    by_key = {kohya_name(name_map(m) if name_map else m): m for m in model_modules}
    found: dict[str, dict[str, torch.Tensor]] = {}
    for key, v in tensors.items():
        base, _, tail = key.partition(".")
        if not base.startswith(PREFIX):
            if base.startswith("lora_te"):
                continue  # text-encoder parts are not PAPA's
            raise LoraFileError(f"{Path(path).name}: key {key!r} is not kohya LoRA naming (lora_unet_...)")
        found.setdefault(base, {})[tail] = v
    unknown = sorted(set(found) - set(by_key))
    missing = sorted(set(by_key) - set(found))
    if unknown or missing:
        raise SessionMismatch(
            f"{Path(path).name} does not fit this model's adapter: {len(unknown)} modules unknown to it "
            f"(e.g. {unknown[:2]}), {len(missing)} of its modules absent (e.g. {missing[:2]}). It was made for "
            "another base model or LoRA target preset."
        )
    state: LoraState = {}
    for base, parts in found.items():
        if DOWN not in parts or UP not in parts:
            raise LoraFileError(f"{Path(path).name}: {base} lacks lora_down or lora_up")
        if not (parts[DOWN].is_floating_point() and parts[UP].is_floating_point()):
            raise LoraFileError(f"{Path(path).name}: {base} holds {parts[DOWN].dtype} tensors, a LoRA needs floating "
                                "point weights; re-export it")
        down, up = parts[DOWN].float(), parts[UP].float()
        rank = down.shape[0]
        if rank != config.rank:
            raise SessionMismatch(f"{Path(path).name} has rank {rank}, the session's LoRA has rank {config.rank}")
        if not (torch.isfinite(down).all() and torch.isfinite(up).all()):
            raise LoraFileError(f"{Path(path).name}: {base} holds NaN or inf")
        file_alpha = float(parts["alpha"]) if "alpha" in parts else float(rank)
        up = up * (file_alpha / rank) / config.scale
        m = by_key[base]
        state[f"{m}.{DOWN}"] = down
        state[f"{m}.{UP}"] = up
    return state
