"""ComfyUI's MODEL (a ``ModelPatcher``) as a PAPA ``Denoiser``; the LoRA on clones.

The host's MODEL is never modified: every LoRA lives on a *clone*. For training, as ComfyUI weight
wrappers (``W → W + alpha/rank · up @ down`` on every forward, with gradients); for sampling, as
ComfyUI's own LoRA weight patches (``with_lora``), which is what a loaded LoRA file becomes, so
PAPA's images equal those of its exported file and cost what native sampling costs.

Module names: the session's ``LoraState`` uses diffusers module paths (kohya's naming for SD1.x/2.x
files); ComfyUI's UNet uses ldm paths. ``ModelInfo`` holds the map between them, taken from
``comfy.utils.unet_to_diffusers``.

ε at DDPM step t (ComfyUI samples in σ-space): x = x_t / √ᾱ_t = x0 + σ_t ε, den = apply_model(x, σ_t),
ε̂ = (x − den) / σ_t, which is the UNet's own ε for ε-models and the implied ε for v-models.
"""
from __future__ import annotations

import contextlib
import logging
import weakref
from dataclasses import dataclass
from typing import Iterator, Mapping, Optional

import torch

from ..papa_core.denoiser import fingerprint_tensors
from ..papa_core.errors import PapaError, SessionMismatch
from ..papa_core.lora import DOWN, UP, LoraConfig, LoraState, is_target, lora_delta, lora_shapes
from ..papa_core.lora_io import lora_to_kohya
from ..papa_core.schedule import DiffusionSchedule

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
UNSUPPORTED_HINT = ("PAPA needs a DDPM UNet with ε- or v-prediction (SD1.x, SD2.x or SDXL checkpoints); "
                    "flow-matching and other models are not supported yet. Load an SD1.5, SD2.x or SDXL checkpoint")


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


def _identity(w: torch.Tensor) -> torch.Tensor:
    # ComfyUI's base weights are Parameters with requires_grad=True: without the detach, backward would
    # compute a gradient for every weight of the model and leave it in the host MODEL's .grad.
    return w.detach()


@dataclass(frozen=True)
class ModelInfo:
    """What PAPA needs to know about a ComfyUI model.

    Attributes:
        family: supported_models class name (``SD15``, ``SDXL`` ...).
        base_model: ``sd15`` / ``sd21`` / ``sdxl`` (LoRA metadata).
        kohya_naming: ``diffusers`` or ``ldm`` (module names in exported files).
        ldm_of: diffusers module path → ldm module path (without ``diffusion_model.``).
        weight_shapes: diffusers module path → weight shape, for every Linear/Conv2d of the UNet.
        prediction: ``eps`` or ``v``.
    """

    family: str
    base_model: str
    kohya_naming: str
    ldm_of: dict[str, str]
    weight_shapes: dict[str, tuple[int, ...]]
    prediction: str

    def lora_targets(self, config: LoraConfig) -> dict[str, tuple[int, ...]]:
        targets = {n: s for n, s in self.weight_shapes.items() if is_target(n, config) and len(s) in (2, 4)}
        if not targets:
            raise PapaError(f"LoRA targets {config.targets!r} match no layer of this {self.family} UNet; pick "
                            "another target preset")
        return targets

    def export_name_map(self) -> Optional[dict[str, str]]:
        """diffusers → file module names, or None when the file uses diffusers names."""
        return dict(self.ldm_of) if self.kohya_naming == "ldm" else None


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


def _check_state(state: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]], config: LoraConfig):
    want = {f"{m}.{DOWN}" for m in expected} | {f"{m}.{UP}" for m in expected}
    if set(state) != want:
        missing, extra = sorted(want - set(state)), sorted(set(state) - want)
        raise SessionMismatch(f"the session's LoRA does not fit this model: {len(missing)} tensors missing (e.g. "
                              f"{missing[:2]}), {len(extra)} unexpected (e.g. {extra[:2]}). Load the checkpoint the "
                              "session was made with, or start a new session")
    for m, shape in expected.items():
        d, u = lora_shapes(shape, config.rank)
        if tuple(state[f"{m}.{DOWN}"].shape) != d or tuple(state[f"{m}.{UP}"].shape) != u:
            raise SessionMismatch(f"LoRA tensor shapes for {m} do not fit this model (another base model or rank?)")


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


PAPA_PATCHES = "papa_patches"  # model_options key: ids of the weight patches with_lora added


def _strip_papa(model) -> None:
    """Remove the PAPA LoRA a MODEL may already carry (from an upstream PAPA node) — on a clone: the
    training wrappers, and the weight patches ``with_lora`` added."""
    cleaned = {}
    for key, fns in model.weight_wrapper_patches.items():
        keep = [f for f in fns if not isinstance(f, LoraWrapper) and f is not _identity]
        if keep:
            cleaned[key] = keep
    model.weight_wrapper_patches = cleaned
    ours = set(model.model_options.pop(PAPA_PATCHES, ()))
    if ours:
        import uuid

        model.patches = {k: kept for k, ps in model.patches.items() if (kept := [p for p in ps if id(p[1]) not in ours])}
        model.patches_uuid = uuid.uuid4()  # tells ComfyUI the weights must be patched anew


def with_lora(model, state: Mapping[str, torch.Tensor], config: LoraConfig, info: ModelInfo):
    """A clone of ``model`` carrying the LoRA ``state`` exactly as ComfyUI applies a loaded LoRA file.

    The patches are built from the very tensors an fp32 export writes (``lora_to_kohya``) and added
    by ComfyUI's own ``load_lora_for_models`` (what LoraLoaderModelOnly calls), so sampling uses the
    same weight arithmetic and dtype handling, at the native cost (weights patched once per load,
    not on every forward), and equals ``LoraLoaderModelOnly(export) → KSampler`` bit for bit. Any
    PAPA LoRA already on ``model`` is replaced, not stacked; the host's MODEL is untouched.
    """
    import comfy.sd

    _check_state(state, info.lora_targets(config), config)
    base = model.clone()
    _strip_papa(base)
    name_map = info.export_name_map()
    tensors = lora_to_kohya(state, config, name_map.__getitem__ if name_map else None)
    patched, _ = comfy.sd.load_lora_for_models(base, None, tensors, 1.0, 0)
    before = {id(p[1]) for ps in base.patches.values() for p in ps}
    patched.model_options[PAPA_PATCHES] = sorted({id(p[1]) for ps in patched.patches.values() for p in ps} - before)
    return patched


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
        _strip_papa(self._patcher)
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
                    self._patcher.add_weight_wrapper(key, _identity)
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
        _check_state(state, {n: self.info.weight_shapes[n] for n in self._wrappers}, self.lora_config)
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
