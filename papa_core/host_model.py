"""What PAPA needs to know of a host's UNet, whichever host loaded it (ComfyUI, Forge): its family,
the map between the session's module names and the host's, the adapted layers' shapes, its
prediction type. Each host's glue fills a ``ModelInfo`` from its own model object; everything here
is plain data and checks. No host imports.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

import torch

from .errors import PapaError, SessionMismatch
from .lora import DOWN, UP, LoraConfig, is_target, lora_shapes

UNSUPPORTED_HINT = ("PAPA needs a DDPM UNet with ε- or v-prediction (SD1.x, SD2.x or SDXL checkpoints); "
                    "flow-matching and other models are not supported yet. Load an SD1.5, SD2.x or SDXL checkpoint")


@dataclass(frozen=True)
class ModelInfo:
    """What PAPA needs to know about a host's UNet.

    Attributes:
        family: the host's name for the model class (``SD15``, ``SDXL`` ...).
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

    def session_meta(self, config: LoraConfig) -> dict:
        """What a session records of its base model (the export reads its naming from it)."""
        meta = {"base_model": self.base_model, "family": self.family, "kohya_naming": self.kohya_naming,
                "prediction": self.prediction}
        if self.kohya_naming == "ldm":
            meta["ldm_names"] = {n: self.ldm_of[n] for n in self.lora_targets(config)}
        return meta


def check_lora_state(state: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]], config: LoraConfig):
    """Refuse a LoRA state whose tensors do not fit the ``expected`` modules (another base model or rank)."""
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
