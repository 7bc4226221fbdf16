"""PAPA Export LoRA: the session's LoRA as a kohya file in models/loras."""
from __future__ import annotations

import logging

import torch

from ..papa_core.lora_io import export_lora
from ..papa_core.summary import summarize
from . import state
from .common import CATEGORY, SESSION, get_session
from .export_path import IF_EXISTS, lora_output_path

log = logging.getLogger("papa")


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
        import folder_paths

        sess = get_session(session)
        root = folder_paths.get_folder_paths("loras")[0]
        path = lora_output_path(root, filename, if_exists)
        path.parent.mkdir(parents=True, exist_ok=True)
        name_map = sess.meta.get("ldm_names") if sess.meta.get("kohya_naming") == "ldm" else None
        summary = summarize(sess)
        export_lora(path, sess.lora_state, sess.lora_config, name_map=(name_map.__getitem__ if name_map else None),
                    base_model=sess.meta.get("base_model"), prediction=sess.meta.get("prediction"),
                    dtype=torch.float16 if dtype == "fp16" else torch.float32,
                    papa_metadata={"session": sess.name, "rounds": summary["labelled_rounds"],
                                   "likes": summary["likes"], "dislikes": summary["dislikes"],
                                   "updates": summary["updates"], "session_version": sess.version})
        rel = path.relative_to(root).as_posix()
        log.info("PAPA: exported %s to %s", sess.name, path)
        return {"ui": {"text": [rel], "papa": [dict(summary, exported=rel)]}, "result": (rel,)}
