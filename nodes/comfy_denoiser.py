"""ComfyUI's MODEL as a PAPA ``Denoiser`` for training: a clone with trainable LoRA weight wrappers.

The host's MODEL is never modified: the LoRA lives on a *clone*, as ComfyUI weight wrappers
(``W → W + alpha/rank · up @ down`` on every forward, with gradients).

ε at DDPM step t (ComfyUI samples in σ-space): x = x_t / √ᾱ_t = x0 + σ_t ε, den = apply_model(x, σ_t),
ε̂ = (x − den) / σ_t, which is the UNet's own ε for ε-models and the implied ε for v-models.
"""
from __future__ import annotations

import contextlib
import uuid
from typing import Iterator, Mapping, Optional

import torch

from ..papa_core.errors import PapaError
from ..papa_core.lora import DOWN, UP, LoraConfig, LoraState, lora_delta, lora_shapes
from ..papa_core.schedule import DiffusionSchedule
from ..papa_core.host_model import ModelInfo, check_lora_state
from .comfy_model import base_fingerprint

class LoraWrapper(torch.nn.Module):
    """A ComfyUI weight wrapper adding ΔW = scale · up @ down to one weight.

    ``trainable`` makes ``down``/``up`` Parameters (create it under ``torch.inference_mode(False)``);
    otherwise they are frozen buffers, a snapshot. ``multiplier`` 0 gives the base weight (θ*).
    """

    def __init__(self, down: torch.Tensor, up: torch.Tensor, scale: float, trainable: bool) -> None:
        super().__init__()
        if trainable:
            self.down = torch.nn.Parameter(down.clone(), requires_grad=True)
            self.up = torch.nn.Parameter(up.clone(), requires_grad=True)
        else:
            self.register_buffer("down", down.clone())
            self.register_buffer("up", up.clone())
        self.scale = float(scale)
        self.multiplier = 1.0
        self.trainable = trainable
        self._delta_cache: dict = {}  # frozen snapshots: ΔW per (device, dtype), computed once

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if self.multiplier == 0.0:
            return weight
        if not self.trainable:
            key = (weight.device, weight.dtype, self.multiplier)
            delta = self._delta_cache.get(key)
            if delta is None:
                self._delta_cache.clear()
                delta = lora_delta(self.down.to(weight.device, torch.float32), self.up.to(weight.device, torch.float32),
                                   self.scale * self.multiplier).to(weight.dtype)
                self._delta_cache[key] = delta
            return weight + delta
        delta = lora_delta(self.down.to(weight.device), self.up.to(weight.device), self.scale * self.multiplier)
        return weight.detach() + delta.to(weight.dtype)  # gradient for the LoRA only, never the base weight

    # the two hooks ModelPatcher uses to move wrappers with the model
    def move_to(self, device: torch.device) -> int:
        self.to(device)
        self._delta_cache.clear()
        return self.passive_memory_usage()

    def passive_memory_usage(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.down, self.up))


def keeps_base_weight(w: torch.Tensor) -> torch.Tensor:
    # ComfyUI's base weights are Parameters with requires_grad=True: without the detach, backward would
    # compute a gradient for every weight of the model and leave it in the host MODEL's .grad.
    return w.detach()



PAPA_PATCHES = "papa_patches"  # model_options key: ids of the weight patches with_lora added


def strip_papa(model) -> None:
    """Remove the PAPA LoRA a MODEL may already carry (from an upstream PAPA node) — on a clone: the
    training wrappers, and the weight patches ``with_lora`` added."""
    cleaned = {}
    for key, fns in model.weight_wrapper_patches.items():
        keep = [f for f in fns if not isinstance(f, LoraWrapper) and f is not keeps_base_weight]
        if keep:
            cleaned[key] = keep
    model.weight_wrapper_patches = cleaned
    ours = set(model.model_options.pop(PAPA_PATCHES, ()))
    if ours:
        model.patches = {k: kept for k, ps in model.patches.items() if (kept := [p for p in ps if id(p[1]) not in ours])}
        model.patches_uuid = uuid.uuid4()  # tells ComfyUI the weights must be patched anew


class ComfyDenoiser:
    """``Denoiser`` over a ComfyUI MODEL: a training clone with trainable LoRA wrappers.

    Construct and use it under ``torch.inference_mode(False)`` (ComfyUI runs nodes in inference
    mode; parameters made there cannot require grad). Every other weight and bias of the training
    clone gets an identity wrapper, which makes ComfyUI's ops copy the (inference-mode) base
    weights into normal tensors that backward may save; both wrappers detach the base weight, so
    backward computes the LoRA's gradient only (ComfyUI's weights are Parameters that require grad).

    Args:
        model: the host's MODEL (ModelPatcher); it is cloned, never modified.
        info: from ``inspect_model``.
        lora_config: the session's adapter shape.
        compute_dtype: train in this dtype (e.g. bf16 over fp16 weights); None keeps the model's.
    """

    def __init__(self, model, info: ModelInfo, lora_config: LoraConfig,
                 compute_dtype: Optional[torch.dtype] = None) -> None:
        import comfy.model_management

        self.info = info
        self.lora_config = lora_config
        self.fingerprint = base_fingerprint(model, info)
        ms = model.get_model_object("model_sampling")
        self.schedule = DiffusionSchedule.from_sigmas(ms.sigmas)
        self.device = comfy.model_management.get_torch_device()
        self._sigmas = ms.sigmas.detach().to(self.device, torch.float32).clone()
        self._a_bar = (1.0 / (1.0 + self._sigmas.double() ** 2)).float()
        self._patcher = model.clone()
        strip_papa(self._patcher)
        if compute_dtype is not None:
            self._patcher.set_model_compute_dtype(compute_dtype)
        targets = info.lora_targets(lora_config)
        self._wrappers: dict[str, LoraWrapper] = {}
        for name in sorted(targets):  # zeros until set_lora_state loads the session's values
            down_shape, up_shape = lora_shapes(targets[name], lora_config.rank)
            w = LoraWrapper(torch.zeros(down_shape, device=self.device), torch.zeros(up_shape, device=self.device),
                            lora_config.scale, trainable=True)
            self._wrappers[name] = w
            self._patcher.add_weight_wrapper(f"diffusion_model.{info.ldm_of[name]}.weight", w)
        lora_keys = {f"diffusion_model.{info.ldm_of[n]}.weight" for n in targets}
        for mod_name, mod in model.model.named_modules():
            if not hasattr(mod, "weight_function"):
                continue
            for pname in ("weight", "bias"):
                key = f"{mod_name}.{pname}"
                if getattr(mod, pname, None) is not None and key not in lora_keys:
                    self._patcher.add_weight_wrapper(key, keeps_base_weight)
        self._loaded = False

    # --- Denoiser protocol ---
    def eps(self, x_t: torch.Tensor, t: torch.Tensor, cond: Mapping[str, torch.Tensor], lora: bool = True) -> torch.Tensor:
        self._load()
        t = t.to(self.device)
        shape = (-1,) + (1,) * (x_t.ndim - 1)
        sigma = self._sigmas[t]
        x = x_t.to(self.device, torch.float32) / self._a_bar[t].sqrt().view(shape)
        kwargs = {k: v.to(self.device).clone() for k, v in cond.items()}
        with self.lora_multiplier(1.0 if lora else 0.0):
            den = self._patcher.model.apply_model(x, sigma.clone(), **kwargs)
        return (x - den.float()) / sigma.view(shape)

    def lora_parameters(self) -> list[torch.nn.Parameter]:
        out = []
        for key in self._keys():
            name, part = key.rsplit(".lora_", 1)
            w = self._wrappers[name]
            out.append(w.down if part == "down.weight" else w.up)
        return out

    def get_lora_state(self) -> LoraState:
        return {k: p.detach().to("cpu", torch.float32).clone() for k, p in zip(self._keys(), self.lora_parameters())}

    @torch.no_grad()
    def set_lora_state(self, state: Mapping[str, torch.Tensor]) -> None:
        check_lora_state(state, {n: self.info.weight_shapes[n] for n in self._wrappers}, self.lora_config)
        for k, p in zip(self._keys(), self.lora_parameters()):
            v = state[k]
            if not torch.isfinite(v).all():
                raise PapaError(f"LoRA tensor {k} holds NaN or inf; refusing to load it")
            p.copy_(v.to(p.device, p.dtype))

    # --- helpers ---
    def _keys(self) -> list[str]:
        return sorted([f"{n}.{DOWN}" for n in self._wrappers] + [f"{n}.{UP}" for n in self._wrappers])

    def _load(self) -> None:
        import comfy.model_management

        if not self._loaded or self._patcher not in _loaded_patchers():
            comfy.model_management.load_models_gpu([self._patcher])
            self._loaded = True

    @contextlib.contextmanager
    def lora_multiplier(self, value: float) -> Iterator[None]:
        old = [w.multiplier for w in self._wrappers.values()]
        for w in self._wrappers.values():
            w.multiplier = value
        try:
            yield
        finally:
            for w, m in zip(self._wrappers.values(), old):
                w.multiplier = m

    @contextlib.contextmanager
    def gradient_checkpointing(self, on: bool = True) -> Iterator[None]:
        """Recompute each UNet block's activations in backward (less memory, ~30% more compute).

        Patches the shared module's block ``forward`` for the duration only; restored on exit.
        """
        if not on:
            yield
            return
        from torch.utils.checkpoint import checkpoint

        unet = self._patcher.model.diffusion_model
        # the UNet iterates each TimestepEmbedSequential's layers itself, so the layers are patched
        heavy = ("ResBlock", "SpatialTransformer", "SpatialVideoTransformer")
        blocks = [layer for seq in list(unet.input_blocks) + [unet.middle_block] + list(unet.output_blocks)
                  for layer in seq if type(layer).__name__ in heavy]
        patched = []
        for b in blocks:
            orig = b.forward

            def fwd(*args, _orig=orig, **kwargs):
                if not torch.is_grad_enabled():
                    return _orig(*args, **kwargs)
                return checkpoint(_orig, *args, use_reentrant=False, **kwargs)

            b.forward = fwd
            patched.append(b)
        try:
            yield
        finally:
            for b in patched:
                del b.forward


def _loaded_patchers() -> list:
    import comfy.model_management

    return [lm.model for lm in comfy.model_management.current_loaded_models]

