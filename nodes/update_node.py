"""PAPA Update: one PAPA update of the session's LoRA on ComfyUI's device, sized to its memory."""
from __future__ import annotations

import logging
import math

import torch

from ..papa_core.errors import PapaError
from ..papa_core.memory import DEFAULT_MAX_PAIRS, MEMORY_MODES, PassSizer
from ..papa_core.summary import progress_image, summarize
from ..papa_core.update import UPDATE_PRESETS, update, update_preset
from . import state
from .common import CATEGORY, SESSION, get_session, image_tensor
from .service import send_status

log = logging.getLogger("papa")
ALGORITHMS = ("EPAPA", "PAPA")
UPDATE_PRESET_NAMES = ("default", "reference", "liked_only", "dpo")


class PAPAUpdate:
    DESCRIPTION = ("Train the session's LoRA on its new feedback (PAPA / EPAPA; with replay of earlier rounds) on "
                   "ComfyUI's device, and output a MODEL carrying the updated LoRA for any sampler, plus a plot of "
                   "the liked share per round and the update loss. Runs again only when new feedback arrived.")
    CATEGORY = CATEGORY
    FUNCTION = "run"
    RETURN_TYPES = ("MODEL", "IMAGE", SESSION)
    RETURN_NAMES = ("model", "plot", "session")
    OUTPUT_TOOLTIPS = ("A copy of the input MODEL with the session's LoRA (the input MODEL is unchanged).",
                       "Liked share per round and update loss.", "The session.")

    @classmethod
    def INPUT_TYPES(cls):
        d = UPDATE_PRESETS["default"]
        return {"required": {
            "model": ("MODEL", {"tooltip": "The base model the session's batches were generated with."}),
            "session": (SESSION, {"tooltip": "The session with new feedback (from PAPA Record Preference)."}),
            "preset": (list(UPDATE_PRESET_NAMES), {"default": "default", "tooltip": "default: bounded PAPA with "
                       "importance-sampled timesteps, replay and the similarity term on every step; reference: the "
                       "paper's loss and exact timestep sum (slow); liked_only / dpo: baselines."}),
            "algorithm": (list(ALGORITHMS), {"default": "EPAPA", "tooltip": "PAPA trains on every timestep; EPAPA only "
                          "on t ≥ k (the coarse, composition-level steps)."}),
            "k": ("INT", {"default": d.objective.k or 400, "min": 0, "max": 999, "tooltip": "EPAPA's threshold k "
                          "(ignored by PAPA)."}),
            "lr": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 1e-5, "round": 1e-6, "tooltip":
                             f"Learning rate; 0 = the preset's (default {d.lr:g}, reference "
                             f"{UPDATE_PRESETS['reference'].lr:g}). The default preset scales it by "
                             f"{d.lr_decay_rounds} / ({d.lr_decay_rounds} + rounds already trained)."}),
            "steps": ("INT", {"default": 0, "min": 0, "max": 1000, "tooltip": "Optimizer steps per update; 0 = the "
                              f"preset's (default {d.steps})."}),
            "timesteps_per_image": ("INT", {"default": 0, "min": 0, "max": 1000, "tooltip": "Timesteps drawn per "
                                    f"image and step; 0 = the preset's (default {d.objective.timesteps_per_image})."}),
            "pref_coef": ("FLOAT", {"default": -1.0, "min": -1.0, "max": 100.0, "step": 0.01, "tooltip":
                                    "Weight of the preference term; -1 = the preset's "
                                    f"(default {d.objective.pref_coef:g})."}),
            "model_coef": ("FLOAT", {"default": -1.0, "min": -1.0, "max": 100.0, "step": 0.001, "tooltip":
                                     "Weight of the similarity-to-base term (keeps quality); -1 = the preset's "
                                     f"(default {d.objective.model_coef:g})."}),
            "gradient_checkpointing": ("BOOLEAN", {"default": False, "tooltip": "Recompute activations in backward: "
                                       "less memory, slower (the memory setting turns it on by itself when needed)."}),
            "pairs_per_pass": ("INT", {"default": DEFAULT_MAX_PAIRS, "min": 1, "max": 256, "tooltip":
                               "The most (image, timestep) pairs per forward/backward pass: more is faster but needs more memory. The result does "
                               "not depend on it. At or above timesteps_per_image each image fits one pass, which saves "
                               "one of its three forward passes."}),
        }, "optional": {
            "memory": (list(MEMORY_MODES), {"default": "auto", "tooltip": "auto: as many pairs per pass as fit in the "
                       "GPU memory ComfyUI reports free (measured on the first pass). low VRAM: one pair per pass with "
                       "gradient checkpointing. fast: pairs_per_pass at once. Out of memory, a step is retried with "
                       "smaller passes; the round and the session are never lost."}),
        }}

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return state.version("feedback")

    def run(self, model, session, preset, algorithm, k, lr, steps, timesteps_per_image, pref_coef, model_coef,
            gradient_checkpointing, pairs_per_pass=DEFAULT_MAX_PAIRS, memory="auto"):
        import comfy.model_management
        import comfy.utils

        from .comfy_model import ComfyDenoiser, inspect_model, memory_probe, training_dtype, with_lora

        info = inspect_model(model)
        sess = get_session(session)
        cfg = build_update_config(preset, algorithm, k, lr, steps, timesteps_per_image, pref_coef, model_coef,
                                  pairs_per_pass)
        store = state.store()
        if sess.untrained_rounds():
            device = comfy.model_management.get_torch_device()
            total = cfg.steps or 1
            pbar = comfy.utils.ProgressBar(total)

            def progress(step, n, info_):
                pbar.update_absolute(step, n)
                comfy.model_management.throw_exception_if_processing_interrupted()

            sizer = PassSizer.start(memory, memory_probe(device), int(pairs_per_pass), bool(gradient_checkpointing),
                                    first_pairs=cfg.objective.timesteps_per_image)
            with torch.inference_mode(False):
                den = ComfyDenoiser(model, info, sess.lora_config, training_dtype(model, device))
                with store.locked(sess.name):
                    stats = update(sess, den, cfg, progress=progress, memory=sizer)
                    store.save(sess)
            state.bump("lora")
            log.info("PAPA update of %s: %d images, %d steps, loss %s, %.1f s, %d pairs per pass%s", sess.name,
                     stats.images, stats.steps, [round(v, 4) for v in stats.loss], stats.seconds, stats.pairs_per_pass,
                     "".join(f"; {note}" for note in stats.memory_notes))
        else:
            log.info("PAPA: session %s has no new feedback; the LoRA is unchanged", sess.name)
        out_model = with_lora(model, sess.lora_state, sess.lora_config, info)
        summary = summarize(sess)
        send_status(summary)
        return {"ui": {"papa": [summary]}, "result": (out_model, image_tensor(progress_image(sess)), session)}


def build_update_config(preset: str, algorithm: str, k: int, lr: float, steps: int, timesteps_per_image: int,
                        pref_coef: float, model_coef: float, pairs_per_pass: int = DEFAULT_MAX_PAIRS):
    """The node's widgets → an UpdateConfig: 0 / -1 keep the preset's value."""
    if preset not in UPDATE_PRESET_NAMES:
        raise PapaError(f"unknown preset {preset!r}: choose one of {', '.join(UPDATE_PRESET_NAMES)}")
    if algorithm not in ALGORITHMS:
        raise PapaError(f"algorithm must be PAPA or EPAPA, got {algorithm!r}")
    if not 1 <= int(pairs_per_pass) <= 256:
        raise PapaError("pairs_per_pass must be 1..256")
    obj = {"k": int(k) if algorithm == "EPAPA" else 0, "max_batch": int(pairs_per_pass)}
    if timesteps_per_image:
        obj["timesteps_per_image"] = int(timesteps_per_image)
    for name, v in (("pref_coef", pref_coef), ("model_coef", model_coef)):
        if v != -1.0:
            if not (math.isfinite(v) and v >= 0):
                raise PapaError(f"{name} must be ≥ 0 (or -1 for the preset's value)")
            obj[name] = float(v)
    over: dict = {"objective": obj}
    if lr:
        over["lr"] = float(lr)
    if steps:
        over["steps"] = int(steps)
    return update_preset(preset, **over)
