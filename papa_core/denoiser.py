"""The one interface the objective talks to: ε̂(x_t, t, conditioning) with the LoRA on or off.

Conditioning is a dict of tensors batched along dim 0 (``{}`` for unconditional models,
``{"class_labels": [B]}``, ``{"encoder_hidden_states": [B, 77, D]}``, SDXL adds
``{"text_embeds": [B, 1280], "time_ids": [B, 6]}``). The objective repeats an image's entries
along dim 0 when it evaluates many timesteps of that image in one forward pass.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
from typing import Iterable, Iterator, Mapping, Optional, Protocol, runtime_checkable

import torch

from .errors import PapaError
from .lora import LoraConfig, LoraState, PeftInjector
from .schedule import DiffusionSchedule

Conditioning = dict[str, torch.Tensor]


@runtime_checkable
class Denoiser(Protocol):
    """What PAPA needs from a host model.

    Attributes:
        schedule: the DDPM schedule the base model was trained with.
        lora_config: the adapter's shape.
        device: where ``eps`` runs.
        fingerprint: identifies the base model (sessions refuse another one).
    """

    schedule: DiffusionSchedule
    lora_config: LoraConfig
    device: torch.device
    fingerprint: str

    def eps(self, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning, lora: bool = True) -> torch.Tensor:
        """ε prediction. x_t [N, C, H, W] (DDPM-scaled), t long [N]; returns float [N, C, H, W]."""

    def lora_parameters(self) -> list[torch.nn.Parameter]: ...

    def get_lora_state(self) -> LoraState: ...

    def set_lora_state(self, state: Mapping[str, torch.Tensor]) -> None: ...


def model_fingerprint(model: torch.nn.Module, extra: Optional[dict] = None, max_elems: int = 4096) -> str:
    """A stable hash of a model's class, config and a strided sample of every base parameter.

    LoRA parameters (peft's ``lora_`` names) are left out: they are the session's, not the base's.
    """
    cfg = getattr(model, "config", None)
    # diffusers' private config keys (e.g. _use_default_values, a list built from a set) change order from
    # one process to the next: only the public fields describe the model
    config = {k: v for k, v in dict(cfg).items() if not k.startswith("_")} if cfg is not None else None
    header = {"class": type(model).__name__, "config": config, "extra": extra}
    return fingerprint_tensors(((n, p) for n, p in model.named_parameters() if "lora_" not in n), header, max_elems)


def fingerprint_tensors(named: Iterable[tuple[str, torch.Tensor]], header: dict, max_elems: int = 4096) -> str:
    """Hash a header (JSON) and a strided sample of each named tensor.

    Reading a few thousand values per tensor keeps this to milliseconds even for SDXL, while any
    checkpoint change that touches a tensor's sampled entries (in practice, any real change) shows.
    """
    h = hashlib.sha256()
    h.update(json.dumps(header, sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, p in named:
            flat = p.detach().reshape(-1)
            step = max(1, flat.numel() // max_elems)
            h.update(name.encode())
            h.update(str(tuple(p.shape)).encode())
            h.update(flat[::step][:max_elems].to("cpu", torch.float32).numpy().tobytes())
    return h.hexdigest()[:16]


class DiffusersDenoiser:
    """``Denoiser`` over a diffusers ``UNet2DModel`` or ``UNet2DConditionModel`` with a peft LoRA.

    The UNet is modified in place (peft wraps the target layers); its base weights are frozen.

    Args:
        unet: the model; its dtype is kept (fp32 for training on CPU, fp16/bf16 weights on GPU work
            with autocast).
        schedule: from the model's scheduler (``DiffusionSchedule.from_diffusers_scheduler``).
        lora_config: rank, alpha, targets.
        prediction_type: "epsilon" or "v_prediction" (converted to ε: ε = √ᾱ·v + √(1-ᾱ)·x_t).
        gradient_checkpointing: trade compute for activation memory when training.
    """

    def __init__(
        self,
        unet: torch.nn.Module,
        schedule: DiffusionSchedule,
        lora_config: LoraConfig,
        prediction_type: str = "epsilon",
        gradient_checkpointing: bool = False,
    ) -> None:
        if prediction_type not in ("epsilon", "v_prediction"):
            raise PapaError(f"prediction_type {prediction_type!r} is not supported; use 'epsilon' or 'v_prediction'")
        self.unet = unet
        self.schedule = schedule
        self.lora_config = lora_config
        self.prediction_type = prediction_type
        self.fingerprint = model_fingerprint(unet, {"prediction_type": prediction_type,
                                                    "alphas_cumprod_sum": float(schedule.alphas_cumprod.sum())})
        self._adapter = PeftInjector(unet, lora_config)
        self.device = next(unet.parameters()).device
        self._a_bar = schedule.alphas_cumprod.to(self.device, torch.float32)
        if gradient_checkpointing:
            if not hasattr(unet, "enable_gradient_checkpointing"):
                raise PapaError(f"{type(unet).__name__} does not support gradient checkpointing")
            unet.enable_gradient_checkpointing()

    # --- Denoiser protocol ---
    def eps(self, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning, lora: bool = True) -> torch.Tensor:
        dtype = self.unet.dtype
        cond = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in cond.items()}
        with self.lora_enabled(lora):
            out = self.unet(x_t.to(dtype), t, **self._unet_kwargs(cond)).sample
        out = out.float()
        if self.prediction_type == "v_prediction":
            a = self._a_bar[t].view(-1, *([1] * (x_t.ndim - 1)))
            out = a.sqrt() * out + (1 - a).sqrt() * x_t.float()
        return out

    def lora_parameters(self) -> list[torch.nn.Parameter]:
        return self._adapter.parameters()

    def get_lora_state(self) -> LoraState:
        return self._adapter.get_state()

    def set_lora_state(self, state: Mapping[str, torch.Tensor]) -> None:
        self._adapter.set_state(state)

    # --- helpers ---
    @contextlib.contextmanager
    def lora_enabled(self, on: bool) -> Iterator[None]:
        self._adapter.enabled(on)
        try:
            yield
        finally:
            self._adapter.enabled(True)

    def module_names(self) -> list[str]:
        return self._adapter.module_names()

    @staticmethod
    def _unet_kwargs(cond: Conditioning) -> dict:
        kw: dict = {}
        added = {}
        for k, v in cond.items():
            if k in ("text_embeds", "time_ids"):
                added[k] = v
            else:
                kw[k] = v
        if added:
            kw["added_cond_kwargs"] = added
        return kw

    def eps_fn(self, cond: Conditioning, lora: bool = True):
        """A sampling-friendly closure ``fn(x_t, t)`` with the conditioning fixed (cond batch = x batch)."""
        return lambda x, t: self.eps(x, t, cond, lora=lora)
