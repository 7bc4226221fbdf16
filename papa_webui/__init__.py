"""The Stable Diffusion WebUI Forge glue: what ``scripts/papa.py`` (the only file Forge loads as a
script) needs to run the PAPA loop next to Forge's live model. Thin like ``nodes/``: all maths and
policy live in ``papa_core``; nothing here imports ComfyUI, and ``nodes/`` imports nothing of it.

Modules: ``forge_model`` (what Forge's model is: family, names, schedule, conditioning, the LoRA as
Forge's own patches for sampling), ``forge_denoiser`` (the training pass over Forge's inference-mode
weights), ``loop`` (sessions: record a batch, feedback, update, undo / reset, export), ``panel`` (the
gradio panel in txt2img).
"""
