"""
@author: ComfyUI-PAPA
@title: ComfyUI-PAPA
@nickname: PAPA
@description: Personalise a diffusion model with thumbs up / thumbs down: an in-memory LoRA trained between
queue runs with PAPA (online personalized active preference alignment), exported as a normal LoRA file.
"""
from .nodes.papa_nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "./web"


def _register_routes() -> None:
    try:
        from server import PromptServer
    except ImportError:  # imported outside a ComfyUI server (tests, scripts)
        return
    if getattr(PromptServer, "instance", None) is not None:
        from .nodes.routes import register

        register(PromptServer.instance.routes)


_register_routes()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
