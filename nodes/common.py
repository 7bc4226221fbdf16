"""What the PAPA nodes share: the session link type, its category, previews and plots as ComfyUI images.

Nodes keep their state in ``state`` (the session store), never on ``self``: ComfyUI drops node
instances freely. ComfyUI modules are imported inside functions, so the node modules import without
a running ComfyUI (the node layer's unit tests rely on that).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..papa_core.lora import LoraConfig

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


def preview_images(images: torch.Tensor, prefix: str) -> list:
    """Save IMAGE [B, H, W, 3] as ComfyUI's temporary previews; the ``ui.images`` entries."""
    import nodes as comfy_nodes

    return comfy_nodes.PreviewImage().save_images(images, filename_prefix=prefix)["ui"]["images"]


def image_tensor(arr) -> torch.Tensor:
    """An HxWx3 uint8 array (a plot) as a ComfyUI IMAGE [1, H, W, 3] in [0, 1]."""
    return torch.from_numpy(arr).float().div(255.0).unsqueeze(0)
