"""PAPA Generate Batch: ComfyUI's own sampler with the session's LoRA; the batch becomes the pending round."""
from __future__ import annotations

from ..papa_core.selection import DEFAULT_STRATEGY, SHOWN_PER_ROUND, STRATEGIES
from ..papa_core.summary import summarize
from .common import CATEGORY, SESSION, preview_images
from .loop import Sampling, generate_batch
from .protocol import MAX_BATCH


class PAPAGenerateBatch:
    DESCRIPTION = ("Sample a batch with ComfyUI's own sampler on a copy of MODEL carrying the session's current LoRA, "
                   "and record it as the session's pending round (latents, conditioning, seed). While the last batch "
                   "still waits for its answer (a timed-out or interrupted wait), it shows that batch again instead "
                   "of sampling a new one, so an answer always belongs to the images shown. The host's MODEL is not "
                   "changed.")
    CATEGORY = CATEGORY
    FUNCTION = "run"
    OUTPUT_NODE = True  # it previews the batch and records a round even when nothing else is connected
    RETURN_TYPES = ("IMAGE", "LATENT")
    RETURN_NAMES = ("images", "latent")
    OUTPUT_TOOLTIPS = ("The decoded batch.", "The batch's latents.")

    @classmethod
    def INPUT_TYPES(cls):
        import comfy.samplers

        return {"required": {
            "model": ("MODEL", {"tooltip": "The base model (SD1.x, SD2.x or SDXL). A MODEL from PAPA Update works "
                                "too: its PAPA LoRA is replaced by the session's current one."}),
            "positive": ("CONDITIONING", {"tooltip": "The prompt. Its conditioning is recorded for training."}),
            "negative": ("CONDITIONING", {"tooltip": "The negative prompt (used for sampling only)."}),
            "vae": ("VAE", {"tooltip": "Decodes the latents into the images you rate."}),
            "session": (SESSION, {"tooltip": "From PAPA Session (or the session output of another PAPA node)."}),
            "batch_size": ("INT", {"default": SHOWN_PER_ROUND, "min": 1, "max": MAX_BATCH, "tooltip": "Images per "
                                   "round. Every update moves the model by the same amount, so small rounds need "
                                   "fewer clicks in all; larger ones give each update more signal."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff, "control_after_generate": True,
                             "tooltip": "Noise seed; image i of the batch is reproducible as batch index i."}),
            "steps": ("INT", {"default": 20, "min": 1, "max": 10000, "tooltip": "Sampling steps."}),
            "cfg": ("FLOAT", {"default": 7.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                              "tooltip": "Classifier-free guidance scale."}),
            "sampler_name": (comfy.samplers.KSampler.SAMPLERS, {"tooltip": "Sampler, as in KSampler."}),
            "scheduler": (comfy.samplers.KSampler.SCHEDULERS, {"tooltip": "Noise schedule, as in KSampler."}),
            "width": ("INT", {"default": 512, "min": 16, "max": 8192, "step": 8, "tooltip": "Image width (px)."}),
            "height": ("INT", {"default": 512, "min": 16, "max": 8192, "step": 8, "tooltip": "Image height (px)."}),
        }, "optional": {
            "pool_size": ("INT", {"default": 0, "min": 0, "max": MAX_BATCH, "advanced": True, "tooltip": "Candidates "
                          "to sample, of which batch_size are shown (0 or ≤ batch_size: no pool). Sampling costs "
                          "GPU seconds; your clicks are what is scarce."}),
            "selection": (list(STRATEGIES), {"default": DEFAULT_STRATEGY, "advanced": True, "tooltip": "Which candidates "
                          "to show: random; diverse (cover the pool, no near-duplicates); uncertain (those your "
                          "answers so far leave undecided); mixed (diverse first, then half uncertain)."}),
        }}

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")  # the session's LoRA changes between runs, which a link value cannot show

    def run(self, model, positive, negative, vae, session, batch_size, seed, steps, cfg, sampler_name, scheduler,
            width, height, pool_size=0, selection=DEFAULT_STRATEGY):
        sess, r, latent, cost = generate_batch(model, positive, negative, session, Sampling(
            batch_size, seed, steps, cfg, sampler_name, scheduler, width, height, pool_size, selection))
        images = vae.decode(latent["samples"])
        if images.ndim == 5:  # some VAEs return [B, T, H, W, C]
            images = images.reshape(-1, *images.shape[-3:])
        info = dict(summarize(sess), round=r.index, batch=r.batch_id, shown=r.batch_size, **cost)
        return {"ui": {"images": preview_images(images, "papa"), "papa": [info]}, "result": (images, latent)}
