"""PAPA Update: one PAPA update of the session's LoRA on ComfyUI's device, sized to its memory."""
from __future__ import annotations

from ..papa_core.memory import DEFAULT_MAX_PAIRS, MEMORY_MODES
from ..papa_core.objective import DEFAULT_K, EPAPA_K
from ..papa_core.summary import progress_image
from . import state
from .common import CATEGORY, SESSION, image_tensor
from ..papa_core.trust_region import STRENGTHS
from .loop import ALGORITHMS, STRENGTH_CHOICES, UPDATE_PRESET_NAMES, expert_values, update_config, update_lora


def _advanced(kind, tooltip: str, **opts) -> tuple:
    """An expert input: hidden behind the node's "advanced" toggle where ComfyUI has one (2026 front
    ends); its value follows the chosen preset (the gallery script sets it when the preset changes)."""
    return (kind, dict(opts, tooltip=tooltip, advanced=True))


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
        d = expert_values("default")
        return {"required": {
            "model": ("MODEL", {"tooltip": "The base model the session's batches were generated with."}),
            "session": (SESSION, {"tooltip": "The session with new feedback (from PAPA Record Preference)."}),
            "preset": (list(UPDATE_PRESET_NAMES), {"default": "default", "tooltip": "default: for a preference "
                       "on what the images show (which subjects, which kinds): bounded PAPA with importance-sampled "
                       "timesteps, replay and the similarity term on every step. style: for a preference on how every "
                       "image looks (line weight, colour, finish): learns from liked-against-disliked pairs and steps "
                       "gently on rounds you liked throughout; holds such a preference steadier, narrows the variety "
                       "among several liked kinds of subject, needs a 👍 and a 👎. reference: the paper's loss and "
                       "exact timestep sum (slow); liked_only / dpo: baselines. Picking one sets the advanced inputs "
                       "to its values."}),
            "algorithm": (list(ALGORITHMS), {"default": "EPAPA", "tooltip": "PAPA trains on every timestep; EPAPA only "
                          "on t ≥ k (the coarse, composition-level steps)."}),
        }, "optional": {
            "k": _advanced("INT", "EPAPA's threshold k: the preference trains on t ≥ k, and default and style hold the LoRA "
                           f"to the base model below it (default {DEFAULT_K}, style {EPAPA_K}; ignored by PAPA).",
                           default=d["k"], min=0, max=999),
            "lr": _advanced("FLOAT", "Learning rate of the optimizer's steps (with a learning strength, the step is "
                            "then scaled to it). The default preset scales it by 20 / (20 + rounds already trained).", default=d["lr"], min=1e-6, max=1.0, step=1e-4, round=1e-6),
            "steps": _advanced("INT", "Optimizer steps per update (0: one per image, as the reference).",
                               default=d["steps"], min=0, max=1000),
            "timesteps_per_image": _advanced("INT", "Timesteps drawn per image and step at t ≥ k (the reference's exact "
                                             "sum ignores it; default and style add one below k that holds the "
                                             "LoRA to the base model there).", default=d["timesteps_per_image"], min=1, max=1000),
            "pref_coef": _advanced("FLOAT", "Weight of the preference term.", default=d["pref_coef"], min=0.0,
                                   max=100.0, step=0.01),
            "model_coef": _advanced("FLOAT", "Weight of the similarity-to-base term (keeps quality).",
                                    default=d["model_coef"], min=0.0, max=100.0, step=0.001),
            "memory": _advanced(list(MEMORY_MODES), "auto: as many pairs per pass as fit in the GPU memory ComfyUI "
                                "reports free (measured on the first pass). low VRAM: one pair per pass with gradient "
                                "checkpointing. fast: pairs_per_pass at once. Out of memory, a step is retried with "
                                "smaller passes; the round and the session are never lost.",
                                default="auto"),
            "pairs_per_pass": _advanced("INT", "The most (image, timestep) pairs per forward/backward pass: more is "
                                        "faster but needs more memory; the result does not depend on it.",
                                        default=DEFAULT_MAX_PAIRS, min=1, max=256),
            "gradient_checkpointing": _advanced("BOOLEAN", "Recompute activations in backward: less memory, slower "
                                                "(the memory setting turns it on by itself when needed).",
                                                default=False),
            # last, so that workflows saved before it existed keep their widget values in place
            "learning_strength": (list(STRENGTH_CHOICES), {"default": d["learning_strength"], "tooltip": (
                "How far one update moves the model, measured as the relative change of its predicted noise on the "
                f"round's own images ({', '.join(f'{n} {100 * v:g}%' for n, v in STRENGTHS.items())} at the first "
                "update, less as rounds accumulate); the same on any model size. 'lr only': the raw lr step.")}),
        }}

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return state.version("feedback")

    def run(self, model, session, preset, algorithm, memory="auto", pairs_per_pass=DEFAULT_MAX_PAIRS,
            gradient_checkpointing=False, **expert):
        cfg = update_config(preset, algorithm, pairs_per_pass, **expert)
        out_model, sess, summary = update_lora(model, session, cfg, memory, pairs_per_pass, gradient_checkpointing)
        return {"ui": {"papa": [summary]}, "result": (out_model, image_tensor(progress_image(sess)), session)}
