"""PAPA Export LoRA: the session's LoRA as a kohya file in models/loras."""
from __future__ import annotations

from . import state
from .common import CATEGORY, SESSION
from ..papa_core.export import IF_EXISTS
from .loop import export_session


class PAPAExportLoRA:
    DESCRIPTION = ("Write the session's LoRA to models/loras/<filename>.safetensors in kohya's format (what LoraLoader, "
                   "A1111/Forge and diffusers read), with training metadata. Re-runs when the LoRA changed.")
    CATEGORY = CATEGORY
    FUNCTION = "run"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("lora_name",)
    OUTPUT_TOOLTIPS = ("The file's name relative to models/loras (as LoraLoader lists it).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "session": (SESSION, {"tooltip": "The session whose LoRA to export (connect PAPA Update's session output "
                                  "to export after the update)."}),
            "filename": ("STRING", {"default": "papa_lora", "tooltip": "Name inside models/loras (subfolders with '/' "
                                    "allowed); .safetensors is added."}),
            "if_exists": (list(IF_EXISTS), {"default": "new version", "tooltip": "new version: write name_2, name_3... "
                          "(LoraLoader caches files by name); overwrite; or error."}),
            "dtype": (["fp32", "fp16"], {"default": "fp32", "tooltip": "Tensor precision in the file (fp16 halves "
                      "the size)."}),
        }}

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return state.version("lora")

    def run(self, session, filename, if_exists, dtype):
        rel, summary = export_session(session, filename, if_exists, dtype)
        return {"ui": {"text": [rel], "papa": [summary]}, "result": (rel,)}
