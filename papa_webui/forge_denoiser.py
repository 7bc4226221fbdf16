"""Forge's UNet as a PAPA ``Denoiser`` for training, next to the live model, without a second copy.

Forge loads the checkpoint under ``torch.inference_mode``: its weights are inference tensors, which
autograd may read but never save for backward — and every Linear / Conv2d / norm layer saves its
weight (backward needs it for the input's gradient). So, for the length of a training pass only,
each such layer of the base UNet runs through ``_Layer``: forward computes it without recording
(LoRA layers with W + α/r · up @ down) and keeps a copy of its input; backward recomputes that one layer
on normal-tensor copies of its own weights and returns the gradients of the input and the LoRA.
One layer's weights are copied at a time (never the model), the weights themselves are only read,
and the layers' own ``forward`` is back when the pass ends. Cost: each layer runs forward twice.

ε at DDPM step t, as in ComfyUI's glue: x = x_t / √ᾱ_t = x0 + σ_t ε, den = KModel.apply_model(x, σ_t),
ε̂ = (x − den) / σ_t — the UNet's own ε for ε-models, the implied ε for v-models.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Iterator, Mapping, Optional

import torch
import torch.nn.functional as F

from papa_core.errors import PapaError
from papa_core.host_model import ModelInfo, check_lora_state
from papa_core.lora import DOWN, UP, LoraConfig, LoraState, lora_delta, lora_shapes

from .forge_model import base_fingerprint, base_unet, schedule

LAYERS = ("Linear", "Conv2d", "GroupNorm", "LayerNorm")  # what an SD / SDXL UNet's weights belong to
FLOATS = (torch.float32, torch.float16, torch.bfloat16)  # quantized storage (fp8, nf4, gguf) is not trained through


def _layer_output(m: torch.nn.Module, x: torch.Tensor, down, up, scale: float, copy: bool) -> torch.Tensor:
    """Layer ``m`` on ``x`` with ΔW = scale · up @ down added to its weight (``down`` None: none);
    ``copy``: on normal-tensor copies of its weight and bias (what backward may save)."""
    w, b = m.weight, m.bias
    if copy:
        w, b = w.clone(), (None if b is None else b.clone())
    w = w.to(x.device, x.dtype)
    b = None if b is None else b.to(x.device, x.dtype)
    if down is not None:
        w = w + lora_delta(down, up, scale).to(x.dtype)
    kind = type(m).__name__
    if kind == "Linear":
        return F.linear(x, w, b)
    if kind == "Conv2d":
        return F.conv2d(x, w, b, m.stride, m.padding, m.dilation, m.groups)
    if kind == "GroupNorm":
        return F.group_norm(x, m.num_groups, w, b, m.eps)
    return F.layer_norm(x, m.normalized_shape, w, b, m.eps)


class _Layer(torch.autograd.Function):
    """One UNet layer whose (inference-mode) weights autograd must not save; see the module docstring."""

    @staticmethod
    def forward(ctx, x, down, up, module, scale):
        ctx.module, ctx.scale = module, scale
        # a copy of the input: Forge's blocks add to their residual stream in place (x += ...) after a layer read it
        ctx.save_for_backward(x.detach().clone(), down, up)
        with torch.no_grad():
            y = _layer_output(module, x, down, up, scale, copy=False)
        return y if y._base is None else y.clone()  # the UNet edits some outputs in place: never hand out a view

    @staticmethod
    def backward(ctx, grad):
        x, down, up = ctx.saved_tensors
        with torch.enable_grad():
            leaves = [None if t is None else t.detach().requires_grad_(need)
                      for t, need in zip((x, down, up), ctx.needs_input_grad[:3])]
            y = _layer_output(ctx.module, leaves[0], leaves[1], leaves[2], ctx.scale, copy=True)
            wanted = [t for t in leaves if t is not None and t.requires_grad]
            grads = iter(torch.autograd.grad(y, wanted, grad) if wanted else ())
        return (*[next(grads) if t is not None and t.requires_grad else None for t in leaves], None, None)


class ForgeDenoiser:
    """``Denoiser`` over Forge's loaded checkpoint (the base UNet, without any prompt LoRA).

    Use it under ``torch.inference_mode(False)``. The LoRA is held here as Parameters; the UNet's
    layers take them only inside ``training()`` — which ``eps`` enters itself.

    Args:
        sd_model: Forge's loaded model (``shared.sd_model``).
        info: from ``forge_model.inspect_model``.
        lora_config: the session's adapter shape.
    """

    def __init__(self, sd_model, info: ModelInfo, lora_config: LoraConfig) -> None:
        from backend import memory_management

        self.info, self.lora_config = info, lora_config
        self._patcher = base_unet(sd_model)
        self.fingerprint = base_fingerprint(sd_model, info)
        self.schedule = schedule(sd_model)
        self.device = memory_management.get_torch_device()
        self._kmodel = self._patcher.model
        sigmas = self._kmodel.predictor.sigmas.detach().to(self.device, torch.float32).clone()
        self._sigmas, self._a_bar = sigmas, (1.0 / (1.0 + sigmas.double() ** 2)).float()
        targets = info.lora_targets(lora_config)
        self._lora: dict[str, tuple[torch.nn.Parameter, torch.nn.Parameter]] = {}
        for name in sorted(targets):  # zeros until set_lora_state loads the session's values
            d, u = lora_shapes(targets[name], lora_config.rank)
            self._lora[info.ldm_of[name]] = (torch.nn.Parameter(torch.zeros(d, device=self.device)),
                                             torch.nn.Parameter(torch.zeros(u, device=self.device)))
        self._names = {info.ldm_of[n]: n for n in targets}
        self._scale = 1.0

    # --- Denoiser protocol ---
    def eps(self, x_t: torch.Tensor, t: torch.Tensor, cond: Mapping[str, torch.Tensor], lora: bool = True) -> torch.Tensor:
        from backend import memory_management

        memory_management.load_model_gpu(self._patcher)
        t = t.to(self.device)
        shape = (-1,) + (1,) * (x_t.ndim - 1)
        sigma = self._sigmas[t]
        x = x_t.to(self.device, torch.float32) / self._a_bar[t].sqrt().view(shape)
        kwargs = {k: v.to(self.device) for k, v in cond.items()}
        with self.training(self.lora_config.scale if lora else 0.0):
            den = self._kmodel.apply_model(x, sigma.clone(), **kwargs)
        return (x - den.float()) / sigma.view(shape)

    def lora_parameters(self) -> list[torch.nn.Parameter]:
        return [p for _, p in self._items()]

    def get_lora_state(self) -> LoraState:
        return {k: p.detach().to("cpu", torch.float32).clone() for k, p in self._items()}

    @torch.no_grad()
    def set_lora_state(self, state: Mapping[str, torch.Tensor]) -> None:
        check_lora_state(state, {n: self.info.weight_shapes[n] for n in self._names.values()}, self.lora_config)
        for k, p in self._items():
            if not torch.isfinite(state[k]).all():
                raise PapaError(f"LoRA tensor {k} holds NaN or inf; refusing to load it")
            p.copy_(state[k].to(p.device, p.dtype))

    # --- helpers ---
    def _items(self) -> list[tuple[str, torch.nn.Parameter]]:
        pairs = [(f"{self._names[ldm]}.{DOWN}", d) for ldm, (d, _) in self._lora.items()]
        pairs += [(f"{self._names[ldm]}.{UP}", u) for ldm, (_, u) in self._lora.items()]
        return sorted(pairs, key=lambda kv: kv[0])

    @contextlib.contextmanager
    def training(self, scale: float) -> Iterator[None]:
        """Every weighted layer of the base UNet through ``_Layer`` (LoRA layers at ``scale``) until exit."""
        unet = self._kmodel.diffusion_model
        patched = []
        try:
            for name, m in unet.named_modules():
                if getattr(m, "weight", None) is None or any(True for _ in m.children()):
                    continue
                if type(m).__name__ not in LAYERS or m.weight.dtype not in FLOATS or \
                        getattr(m, "scale_weight", None) is not None:
                    raise PapaError(f"PAPA cannot train through Forge's {type(m).__name__} layer {name} "
                                    f"({m.weight.dtype}): load the checkpoint in fp16, bf16 or fp32, not quantized")
                down, up = self._lora.get(name, (None, None))
                m.forward = functools.partial(_forward, m, down, up, scale if down is not None else 0.0)
                patched.append(m)
            yield
        finally:
            for m in patched:
                del m.forward


def _forward(module, down: Optional[torch.Tensor], up: Optional[torch.Tensor], scale: float, x: torch.Tensor,
             *args, **kwargs) -> torch.Tensor:
    if scale == 0.0:
        down = up = None
    if not torch.is_grad_enabled() or (down is None and not x.requires_grad):  # nothing to differentiate here
        with torch.no_grad():
            return _layer_output(module, x, down, up, scale, copy=False)
    return _Layer.apply(x, down, up, module, scale)
