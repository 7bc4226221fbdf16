"""What the PAPA nodes share: the session link type, its category, and opening the linked session.

Nodes keep their state in ``state`` (the session store), never on ``self``: ComfyUI drops node
instances freely. ComfyUI modules are imported inside functions, so the node modules import without
a running ComfyUI (the node layer's unit tests rely on that).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..papa_core.errors import PapaError, SessionNotFound
from ..papa_core.lora import LoraConfig, init_lora_state
from . import state

CATEGORY = "PAPA"
SESSION = "PAPA_SESSION"


@dataclass(frozen=True)
class SessionRef:
    """What flows along PAPA_SESSION links: the session's name and adapter shape, not its state."""

    name: str
    lora_config: LoraConfig


# --- helpers shared by the nodes -----------------------------------------------------------------

def queued_prompt_id():
    """The id of the prompt ComfyUI is running (None outside a server)."""
    try:
        from server import PromptServer
        return getattr(PromptServer.instance, "last_prompt_id", None)
    except (ImportError, AttributeError):
        return None


def open_session(ref: SessionRef, model, info):
    """Open the session for this MODEL, creating it (and its zero LoRA) on first use."""
    from .comfy_model import base_fingerprint

    meta = {"base_model": info.base_model, "family": info.family, "kohya_naming": info.kohya_naming,
            "prediction": info.prediction}
    targets = info.lora_targets(ref.lora_config)
    if info.kohya_naming == "ldm":
        meta["ldm_names"] = {n: info.ldm_of[n] for n in targets}
    with torch.inference_mode(False):
        return state.store().open_or_create(ref.name, base_fingerprint(model, info), ref.lora_config,
                                            init_lora_state(targets, ref.lora_config), meta)


def get_session(ref: SessionRef):
    """The stored session a link names, with what to do when it does not exist yet."""
    try:
        return state.store().get(ref.name)
    except SessionNotFound as e:
        raise PapaError(f"{e}. Run PAPA Generate Batch with this session first") from None


def image_tensor(arr) -> torch.Tensor:
    """An HxWx3 uint8 array (a plot) as a ComfyUI IMAGE [1, H, W, 3] in [0, 1]."""
    return torch.from_numpy(arr).float().div(255.0).unsqueeze(0)
