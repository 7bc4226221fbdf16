"""
@author: ComfyUI-PAPA
@title: ComfyUI-PAPA
@nickname: PAPA
@description: Personalise a diffusion model with thumbs up / thumbs down: an in-memory LoRA trained between
queue runs with PAPA (online personalized active preference alignment), exported as a normal LoRA file.
"""
from .nodes.papa_nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "./web"


def _start() -> None:
    """Inside a ComfyUI server: add the routes, and remove what writes killed in the last run left."""
    try:
        from server import PromptServer
    except ImportError:  # imported outside a ComfyUI server (tests, scripts)
        return
    if getattr(PromptServer, "instance", None) is not None:
        import folder_paths

        from .nodes.routes import register
        from .nodes.service import clean_leftovers

        register(PromptServer.instance.routes)
        clean_leftovers(folder_paths.get_folder_paths("loras"))


_start()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
