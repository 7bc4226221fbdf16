"""LoRA adapters as data (``LoraConfig`` + ``LoraState``), separate from how they are injected.

A ``LoraState`` maps ``"<module path>.lora_down.weight"`` / ``"<module path>.lora_up.weight"`` to
tensors, where <module path> is the diffusers module name (``down_blocks.1.attentions.0.to_q``).
Shapes follow kohya's files: Linear down [r, in], up [out, r]; Conv2d down [r, in, kh, kw],
up [out, r, 1, 1]. The effective weight change is ΔW = (alpha / rank) · up @ down.

Injection into diffusers models goes through peft (``PeftInjector``), whose ``lora_A``/``lora_B``
names stay in memory: they are never written to disk (ComfyUI 0.3.64 cannot load them).
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Iterable, Mapping

import torch

from .errors import PapaError, SessionMismatch

LoraState = dict[str, torch.Tensor]

# Module-name suffixes each preset adapts. Attention projections exist in UNet2DModel's
# AttnDownBlock2D and in UNet2DConditionModel's transformer blocks alike.
TARGET_PRESETS: dict[str, tuple[str, ...]] = {
    "attention": ("to_q", "to_k", "to_v", "to_out.0"),
    "attention+conv": ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "conv1", "conv2"),
}

DOWN, UP = "lora_down.weight", "lora_up.weight"


@dataclass(frozen=True)
class LoraConfig:
    """What the adapter looks like. Two sessions can share a LoRA only if their configs are equal.

    Attributes:
        rank: inner dimension r of every adapted layer (1..1024).
        alpha: scale numerator; ΔW = alpha/rank · up @ down (kohya's and peft's convention).
        targets: a preset name from TARGET_PRESETS, or a comma-separated list of module-name suffixes.
        init_seed: seed of the random ``down`` initialisation (``up`` starts at zero, so ΔW = 0).
    """

    rank: int = 8
    alpha: float = 8.0
    targets: str = "attention"
    init_seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.rank, int) or not 1 <= self.rank <= 1024:
            raise PapaError(f"LoRA rank must be an integer in 1..1024, got {self.rank!r}")
        if not (isinstance(self.alpha, (int, float)) and self.alpha > 0 and self.alpha == self.alpha):
            raise PapaError(f"LoRA alpha must be a positive number, got {self.alpha!r}")
        if not self.target_modules:
            raise PapaError(f"LoRA targets {self.targets!r} name no modules; use one of {sorted(TARGET_PRESETS)}")

    @property
    def target_modules(self) -> tuple[str, ...]:
        if self.targets in TARGET_PRESETS:
            return TARGET_PRESETS[self.targets]
        return tuple(s.strip() for s in self.targets.split(",") if s.strip())

    @property
    def scale(self) -> float:
        return float(self.alpha) / self.rank

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> "LoraConfig":
        return cls(rank=int(d["rank"]), alpha=float(d["alpha"]), targets=str(d["targets"]),
                   init_seed=int(d.get("init_seed", 0)))

    def describe_difference(self, other: "LoraConfig") -> list[str]:
        a, b = self.to_dict(), other.to_dict()
        return [f"{k}: {a[k]!r} vs {b[k]!r}" for k in a if k != "init_seed" and a[k] != b[k]]


def is_target(module_name: str, config: LoraConfig) -> bool:
    """peft's rule: a module is adapted when its name equals a target or ends with ``.<target>``."""
    return any(module_name == t or module_name.endswith("." + t) for t in config.target_modules)


def module_names(state: Mapping[str, torch.Tensor]) -> list[str]:
    """The adapted module paths of a LoraState, sorted."""
    return sorted({k[: -len(DOWN) - 1] for k in state if k.endswith(DOWN)})


def clone_state(state: Mapping[str, torch.Tensor]) -> LoraState:
    return {k: v.detach().clone() for k, v in state.items()}


def states_equal(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> bool:
    """Bitwise equality (same keys, dtypes, shapes and bytes)."""
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and torch.equal(a[k].cpu(), b[k].cpu()) for k in a
    )


def lora_delta(down: torch.Tensor, up: torch.Tensor, scale: float) -> torch.Tensor:
    """ΔW = scale · up @ down, shaped like the adapted weight ([out, in] or [out, in, kh, kw]).

    Differentiable; computed in the tensors' own dtype (callers cast).
    """
    if down.ndim == 4:
        return scale * torch.einsum("or,rikl->oikl", up.flatten(1), down)
    return scale * up @ down


def delta_weight(state: Mapping[str, torch.Tensor], module: str, scale: float) -> torch.Tensor:
    """ΔW of one module of a LoraState, in float32."""
    return lora_delta(state[f"{module}.{DOWN}"].float(), state[f"{module}.{UP}"].float(), scale)


def lora_shapes(weight_shape: tuple[int, ...], rank: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(down, up) shapes for a Linear [out, in] or Conv2d [out, in, kh, kw] weight (kohya's layout)."""
    if len(weight_shape) == 2:
        out_f, in_f = weight_shape
        return (rank, in_f), (out_f, rank)
    if len(weight_shape) == 4:
        out_c, in_c, kh, kw = weight_shape
        return (rank, in_c, kh, kw), (out_c, rank, 1, 1)
    raise PapaError(f"LoRA adapts Linear or Conv2d weights; got a weight of shape {tuple(weight_shape)}")


def init_lora_state(weight_shapes: Mapping[str, tuple[int, ...]], config: LoraConfig) -> LoraState:
    """A fresh adapter for modules {name: weight shape}: ΔW = 0 (up = 0), down ~ U(±1/√fan_in).

    The bound is kaiming-uniform with a = √5, the default of torch's Linear/Conv2d and of peft's
    lora_A, so hosts without peft start from the same distribution. Seeded by ``config.init_seed``
    and independent of module order.
    """
    state: LoraState = {}
    for name in sorted(weight_shapes):
        down_shape, up_shape = lora_shapes(tuple(weight_shapes[name]), config.rank)
        fan_in = 1
        for d in down_shape[1:]:
            fan_in *= d
        g = torch.Generator().manual_seed(config.init_seed * 1_000_003 + _stable_hash(name))
        bound = 1.0 / fan_in ** 0.5
        state[f"{name}.{DOWN}"] = (torch.rand(down_shape, generator=g, dtype=torch.float32) * 2 - 1) * bound
        state[f"{name}.{UP}"] = torch.zeros(up_shape, dtype=torch.float32)
    return state


def _stable_hash(text: str) -> int:
    import zlib

    return zlib.crc32(text.encode())


_PEFT_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<ab>[AB])\.(?P<adapter>[^.]+)\.weight$")


@dataclass
class PeftInjector:
    """Puts a ``LoraConfig`` into a diffusers model through peft, and moves ``LoraState`` in and out.

    One adapter named ``adapter_name`` per model. ``enabled(False)`` gives the base model θ* without a
    second copy of the network (PAPA's model-similarity term needs it every step).
    """

    model: torch.nn.Module
    config: LoraConfig
    adapter_name: str = "papa"
    _params: dict[str, torch.nn.Parameter] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        from peft import LoraConfig as PeftLoraConfig
        from peft import inject_adapter_in_model

        peft_cfg = PeftLoraConfig(
            r=self.config.rank,
            lora_alpha=self.config.alpha,
            target_modules=list(self.config.target_modules),
            init_lora_weights=True,
            lora_dropout=0.0,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.init_seed)
            try:
                inject_adapter_in_model(peft_cfg, self.model, adapter_name=self.adapter_name)
            except ValueError as e:
                raise PapaError(
                    f"LoRA targets {self.config.targets!r} match no module of {type(self.model).__name__}: {e}. "
                    f"Pick another target preset ({', '.join(TARGET_PRESETS)})."
                ) from e
        for name, p in self.model.named_parameters():
            m = _PEFT_KEY.match(name)
            if m and m["adapter"] == self.adapter_name:
                key = f"{m['module']}.{DOWN if m['ab'] == 'A' else UP}"
                self._params[key] = p
                p.requires_grad_(True)
            else:
                p.requires_grad_(False)
        if not self._params:
            raise PapaError(f"no LoRA layer was created for targets {self.config.target_modules}")
        self._layers = [m for m in self.model.modules() if hasattr(m, "lora_A") and hasattr(m, "_disable_adapters")]

    # --- the adapter as data ---
    def parameters(self) -> list[torch.nn.Parameter]:
        """Trainable tensors in a fixed order (sorted LoraState keys): optimizer state depends on it."""
        return [self._params[k] for k in sorted(self._params)]

    def keys(self) -> list[str]:
        return sorted(self._params)

    def get_state(self) -> LoraState:
        return {k: p.detach().to("cpu", torch.float32).clone() for k, p in sorted(self._params.items())}

    @torch.no_grad()
    def set_state(self, state: Mapping[str, torch.Tensor]) -> None:
        missing = sorted(set(self._params) - set(state))
        extra = sorted(set(state) - set(self._params))
        if missing or extra:
            raise SessionMismatch(
                f"LoRA weights do not fit this model's adapter: {len(missing)} missing "
                f"(e.g. {missing[:2]}), {len(extra)} unexpected (e.g. {extra[:2]}). "
                "Was it made for another base model or LoRA target preset?"
            )
        for k, p in self._params.items():
            v = state[k]
            if tuple(v.shape) != tuple(p.shape):
                raise SessionMismatch(f"LoRA tensor {k} has shape {tuple(v.shape)}, the model needs {tuple(p.shape)} "
                                      "(different rank or base model?)")
            if not torch.isfinite(v).all():
                raise PapaError(f"LoRA tensor {k} holds NaN or inf; refusing to load it")
            p.copy_(v.to(p.device, p.dtype))

    def enabled(self, on: bool) -> None:
        for layer in self._layers:
            layer._disable_adapters = not on

    def module_names(self) -> list[str]:
        return module_names(self._params)


def all_module_names(model: torch.nn.Module) -> Iterable[str]:
    return (n for n, _ in model.named_modules() if n)
