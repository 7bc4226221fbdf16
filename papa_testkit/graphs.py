"""API-format workflows for the integration tests (node id → {class_type, inputs})."""
from __future__ import annotations

import os

CKPT = "papa_tiny_sd15.safetensors"
SIZE = int(os.environ.get("PAPA_TEST_SIZE", "64"))  # px; benchmarks/gpu_check.sh runs the tests at 512
STEPS = 2
CFG = 5.0
SAMPLER = "euler"
SCHEDULER = "normal"


def base(prompt: str = "a painting of a cat") -> dict:
    return {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": prompt, "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["ckpt", 1]}},
    }


def session(name: str, rank: int = 4) -> dict:
    return {"class_type": "PAPA_Session", "inputs": {"session_name": name, "lora_rank": rank, "lora_alpha": float(rank),
                                                    "targets": "attention", "seed": 0}}


def generate(model, sess, seed: int = 42, batch: int = 2) -> dict:
    return {"class_type": "PAPA_GenerateBatch", "inputs": {
        "model": model, "positive": ["pos", 0], "negative": ["neg", 0], "vae": ["ckpt", 2], "session": sess,
        "batch_size": batch, "seed": seed, "steps": STEPS, "cfg": CFG, "sampler_name": SAMPLER,
        "scheduler": SCHEDULER, "width": SIZE, "height": SIZE}}


def record(images, sess, feedback: str, timeout_s: int = 60) -> dict:
    return {"class_type": "PAPA_RecordPreference", "inputs": {"images": images, "session": sess, "feedback": feedback,
                                                              "timeout_s": timeout_s}}


def update(model, sess, steps: int = 2, timesteps: int = 4, **kw) -> dict:
    """PAPA Update as an API prompt writes it: the preset's values for every advanced input left out."""
    inputs = {"model": model, "session": sess, "preset": "default", "algorithm": "EPAPA", "steps": steps,
              "timesteps_per_image": timesteps, "pairs_per_pass": 8}
    inputs.update(kw)
    return {"class_type": "PAPA_Update", "inputs": inputs}


def export(sess, filename: str, if_exists: str = "new version") -> dict:
    return {"class_type": "PAPA_ExportLoRA", "inputs": {"session": sess, "filename": filename,
                                                        "if_exists": if_exists, "dtype": "fp32"}}


def save(images, prefix: str) -> dict:
    return {"class_type": "SaveImage", "inputs": {"images": images, "filename_prefix": prefix}}


def save_latent(samples, prefix: str) -> dict:
    return {"class_type": "SaveLatent", "inputs": {"samples": samples, "filename_prefix": f"latents/{prefix}"}}


def loop(name: str, feedback: str = "+ -", filename: str = "papa_test", seed: int = 42) -> dict:
    """generate → feedback (text) → update → generate → export, in one prompt."""
    g = base()
    g.update({
        "sess": session(name),
        "gen1": generate(["ckpt", 0], ["sess", 0], seed),
        "rec": record(["gen1", 0], ["sess", 0], feedback),
        "upd": update(["ckpt", 0], ["rec", 0]),
        "gen2": generate(["upd", 0], ["upd", 2], seed),
        "exp": export(["upd", 2], filename),
        "save1": save(["gen1", 0], f"{name}_gen1"),
        "save2": save(["gen2", 0], f"{name}_gen2"),
        "lat2": save_latent(["gen2", 1], f"{name}_gen2"),
    })
    return g


def native(prefix: str, seed: int = 42, batch: int = 2, lora: str | None = None) -> dict:
    """KSampler on the checkpoint's MODEL (optionally through LoraLoaderModelOnly), decoded and saved."""
    g = base()
    model = ["ckpt", 0]
    if lora:
        g["lora"] = {"class_type": "LoraLoaderModelOnly", "inputs": {"model": model, "lora_name": lora,
                                                                     "strength_model": 1.0}}
        model = ["lora", 0]
    g.update({
        "lat": {"class_type": "EmptyLatentImage", "inputs": {"width": SIZE, "height": SIZE, "batch_size": batch}},
        "ks": {"class_type": "KSampler", "inputs": {"model": model, "seed": seed, "steps": STEPS, "cfg": CFG,
                                                    "sampler_name": SAMPLER, "scheduler": SCHEDULER,
                                                    "positive": ["pos", 0], "negative": ["neg", 0],
                                                    "latent_image": ["lat", 0], "denoise": 1.0}},
        "dec": {"class_type": "VAEDecode", "inputs": {"samples": ["ks", 0], "vae": ["ckpt", 2]}},
        "save": save(["dec", 0], prefix),
        "slat": save_latent(["ks", 0], prefix),
    })
    return g
