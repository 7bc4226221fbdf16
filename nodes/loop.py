"""The loop's work on ComfyUI, one function per node: sample a batch, update the LoRA, export it.

Each takes what its node's inputs hold and returns what the node shows and outputs; the nodes only
declare inputs. ComfyUI modules are imported inside the functions (the module imports without one).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Optional

import torch

from ..papa_core.errors import PapaError
from ..papa_core.export import export_session as export_session_file
from ..papa_core.memory import PassSizer
from ..papa_core.objective import EPAPA_K
from ..papa_core.selection import STRATEGIES, select_for
from ..papa_core.session import Round, Session
from ..papa_core.summary import summarize
from ..papa_core.trust_region import STRENGTHS
from ..papa_core.update import TEACHING_PRESETS, UPDATE_PRESETS, UpdateConfig, update, update_preset
from . import state
from .common import SessionRef
from .protocol import MAX_BATCH
from .service import get_session, open_session, send_status

log = logging.getLogger("papa")


@dataclass(frozen=True)
class Sampling:
    """KSampler's settings for a batch (as PAPA Generate Batch's inputs name them)."""

    batch_size: int
    seed: int
    steps: int
    cfg: float
    sampler_name: str
    scheduler: str
    width: int
    height: int
    pool_size: int = 0  # candidates sampled, of which batch_size are shown (0: just the batch)
    selection: str = "random"  # how they are chosen (papa_core.selection.STRATEGIES)


def generate_batch(model, positive, negative, ref: SessionRef, s: Sampling) -> tuple[Session, Round, dict, dict]:
    """The session's pending batch: sampled now with ComfyUI's own sampler on a clone carrying the
    session's LoRA (with ``pool_size``: the ``batch_size`` of a larger pool that ``selection`` picks),
    or — while the last batch still waits for its answer — that batch again.

    Returns (session, its pending round, the LATENT of the images shown, what it cost: candidates
    sampled, seconds, shown again?).
    """
    from .comfy_model import inspect_model

    if not 1 <= s.batch_size <= MAX_BATCH or not 0 <= s.pool_size <= MAX_BATCH:
        raise PapaError(f"batch_size must be 1..{MAX_BATCH}, and pool_size 0..{MAX_BATCH} (0: no pool)")
    if s.selection not in STRATEGIES:
        raise PapaError(f"selection must be one of {', '.join(STRATEGIES)}")
    info = inspect_model(model)
    sess = open_session(ref, model, info)
    r = sess.pending_round
    if r is not None:  # nothing re-generates a batch that still waits for its answer: show it again
        log.info("PAPA: round %d of %s still waits for its answer; showing that batch again instead of sampling "
                 "(PAPA Undo / Reset 'discard pending batch' drops it)", r.index, sess.name)
        return sess, r, {"samples": model.model.process_latent_out(r.x0.clone())}, {"shown_again": True}
    t0 = time.perf_counter()
    latent, candidates = _sample(model, positive, negative, sess, info, s)
    return sess, sess.pending_round, latent, {"shown_again": False, "candidates": candidates,
                                              "sample_seconds": round(time.perf_counter() - t0, 2)}


def _sample(model, positive, negative, sess: Session, info, s: Sampling) -> tuple[dict, int]:
    """ComfyUI's own sampler on a clone carrying the session's LoRA; the images shown (all, or those
    picked from the pool) become the pending round, the rest are dropped. Returns (LATENT, candidates)."""
    import nodes as comfy_nodes

    from .comfy_lora import with_lora
    from .comfy_model import conditioning_tensors, empty_latent

    sampling_model = with_lora(model, sess.lora_state, sess.lora_config, info)
    n = max(s.pool_size, s.batch_size)
    (out,) = comfy_nodes.common_ksampler(sampling_model, s.seed, s.steps, s.cfg, s.sampler_name, s.scheduler,
                                         positive, negative, {"samples": empty_latent(model, n, s.width, s.height)})
    with torch.inference_mode(False):
        x0 = model.model.process_latent_in(out["samples"].clone().float()).clone()
        picks = list(range(n)) if n == s.batch_size else select_for(
            sess, x0, s.batch_size, s.selection, torch.Generator().manual_seed(int(s.seed) % 2**63))
        x0, samples = x0[picks], out["samples"][picks]
        cond = {k: v.clone() for k, v in conditioning_tensors(model, positive, samples).items()}
        with state.store().locked(sess.name):
            sess.add_round(x0, cond, seeds=[int(s.seed)] * s.batch_size, meta={
                "batch_index": picks, "steps": s.steps, "cfg": s.cfg, "sampler": s.sampler_name,
                "scheduler": s.scheduler, "width": s.width, "height": s.height, "lora_version": sess.version,
                "candidates": n, "selection": s.selection if n > s.batch_size else "none"})
            state.store().save(sess)
    return {"samples": samples}, n


UPDATE_PRESET_NAMES = (*TEACHING_PRESETS, "reference", "liked_only", "dpo")  # the presets PAPA Update offers
ALGORITHMS = ("EPAPA", "PAPA")
EXPERT_INPUTS = ("k", "lr", "steps", "timesteps_per_image", "pref_coef", "model_coef")
RAW_LR = "lr only"  # the learning-strength choice without the trust region: the raw lr step
STRENGTH_CHOICES = (*STRENGTHS, RAW_LR)


def strength_name(value: Optional[float]) -> str:
    """The learning-strength choice a preset's ``strength`` is (``RAW_LR`` for None)."""
    return next((name for name, v in STRENGTHS.items() if v == value), RAW_LR)


def expert_values(preset: str) -> dict:
    """The values PAPA Update's expert inputs hold for ``preset`` (what the node shows when it is picked).
    ``steps`` 0 is the reference's one step per image; ``k`` is EPAPA's threshold, used with EPAPA."""
    c = UPDATE_PRESETS[preset]
    return {"learning_strength": strength_name(c.strength), "k": c.objective.k or EPAPA_K, "lr": c.lr,
            "steps": c.steps or 0, "timesteps_per_image": c.objective.timesteps_per_image,
            "pref_coef": c.objective.pref_coef, "model_coef": c.objective.model_coef}


def update_config(preset: str, algorithm: str, pairs_per_pass: int, learning_strength: Optional[str] = None,
                  **expert) -> UpdateConfig:
    """PAPA Update's inputs → an UpdateConfig: the preset, with the inputs given replacing its values."""
    if preset not in UPDATE_PRESET_NAMES:
        raise PapaError(f"unknown preset {preset!r}: choose one of {', '.join(UPDATE_PRESET_NAMES)}")
    if algorithm not in ALGORITHMS:
        raise PapaError(f"algorithm must be PAPA or EPAPA, got {algorithm!r}")
    if learning_strength is not None and learning_strength not in STRENGTH_CHOICES:
        raise PapaError(f"learning_strength must be one of {', '.join(STRENGTH_CHOICES)}, got {learning_strength!r}")
    unknown = sorted(set(expert) - set(EXPERT_INPUTS))
    if unknown:
        raise PapaError(f"unknown inputs {unknown}; PAPA Update takes {', '.join(EXPERT_INPUTS)}")
    v = dict(expert_values(preset), **{k: x for k, x in expert.items() if x is not None})
    obj = {"k": int(v["k"]) if algorithm == "EPAPA" else 0, "max_batch": int(pairs_per_pass),
           "timesteps_per_image": int(v["timesteps_per_image"]), "pref_coef": float(v["pref_coef"]),
           "model_coef": float(v["model_coef"])}
    strength = learning_strength or v["learning_strength"]
    return update_preset(preset, objective=obj, lr=float(v["lr"]), steps=int(v["steps"]) or None,
                         strength=STRENGTHS.get(strength))


def update_lora(model, ref: SessionRef, cfg: UpdateConfig, memory: str, pairs_per_pass: int,
                checkpointing: bool) -> tuple[object, Session, dict]:
    """Train the session's LoRA on its new feedback on ComfyUI's device (sized to its memory) and save
    it; returns (a clone of ``model`` carrying the LoRA, the session, its summary)."""
    import comfy.model_management
    import comfy.utils

    from .comfy_denoiser import ComfyDenoiser
    from .comfy_lora import with_lora
    from .comfy_model import inspect_model, memory_probe, training_dtype

    info = inspect_model(model)
    sess = get_session(ref)
    if sess.untrained_rounds():
        device = comfy.model_management.get_torch_device()
        pbar = comfy.utils.ProgressBar(cfg.steps or 1)

        def progress(step, n, _info):
            pbar.update_absolute(step, n)
            comfy.model_management.throw_exception_if_processing_interrupted()

        sizer = PassSizer.start(memory, memory_probe(device), int(pairs_per_pass), bool(checkpointing),
                                first_pairs=cfg.objective.timesteps_per_image)
        with torch.inference_mode(False):
            den = ComfyDenoiser(model, info, sess.lora_config, training_dtype(model, device))
            with state.store().locked(sess.name):
                stats = update(sess, den, cfg, progress=progress, memory=sizer)
                state.store().save(sess)
        state.bump("lora")
        moved = "" if stats.change is None else f", model moved {100 * stats.change:.1f}% (target {100 * stats.change_target:.1f}%)"
        log.info("PAPA update of %s: %d images, %d steps, loss %s%s, %.1f s, %d pairs per pass%s", sess.name,
                 stats.images, stats.steps, [round(v, 4) for v in stats.loss], moved, stats.seconds,
                 stats.pairs_per_pass, "".join(f"; {note}" for note in stats.memory_notes))
    else:
        log.info("PAPA: session %s has no new feedback; the LoRA is unchanged", sess.name)
    summary = summarize(sess)
    send_status(summary)
    return with_lora(model, sess.lora_state, sess.lora_config, info), sess, summary


def export_session(ref: SessionRef, filename: str, if_exists: str, dtype: str,
                   loras_dir: Optional[str] = None) -> tuple[str, dict]:
    """Write the session's LoRA to ``<loras>/<filename>.safetensors`` (kohya format, training metadata);
    returns the name relative to the loras folder (as LoraLoader lists it) and the summary."""
    if loras_dir is None:
        import folder_paths

        loras_dir = folder_paths.get_folder_paths("loras")[0]
    path, summary = export_session_file(get_session(ref), loras_dir, filename, if_exists, dtype)
    rel = path.relative_to(loras_dir).as_posix()
    log.info("PAPA: exported %s to %s", ref.name, path)
    return rel, dict(summary, exported=rel)
