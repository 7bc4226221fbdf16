"""The PAPA loop in Forge, one function per thing the panel or a txt2img request asks for: sample with
the session's LoRA, record the batch, record an answer, update, undo / reset / discard, export.

Sessions live in one ``SessionStore`` (``$PAPA_SESSION_DIR``, else ``<webui data>/papa_sessions``),
the same files ComfyUI's pack writes. Forge's modules are imported inside functions.
"""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from papa_core.errors import PapaError, SessionNotFound
from papa_core.export import export_session
from papa_core.feedback import parse_feedback
from papa_core.lora import LoraConfig, init_lora_state
from papa_core.session import Round, Session, SessionStore, validate_session_name
from papa_core.summary import summarize
from papa_core.trust_region import DEFAULT_STRENGTH, STRENGTHS
from papa_core.update import TEACHING_PRESETS, UpdateStats, update, update_preset

from . import forge_model

log = logging.getLogger("papa")

LORA_CONFIG = LoraConfig()  # the adapter every webui session gets (ComfyUI's PAPA Session default)
MAX_BATCH = 16  # images a person rates at once (txt2img's batch size)
_store: Optional[SessionStore] = None
_guard = threading.Lock()


def store() -> SessionStore:
    """The one session store, at ``$PAPA_SESSION_DIR`` or ``<webui data dir>/papa_sessions``."""
    global _store
    env = os.environ.get("PAPA_SESSION_DIR")
    if env:
        root = Path(env)
    else:
        from modules import paths

        root = Path(paths.data_path) / "papa_sessions"
    with _guard:
        if _store is None or _store.root != root:
            _store = SessionStore(root)
        return _store


@dataclass(frozen=True)
class Request:
    """The PAPA part of a txt2img request (the script's arguments, in this order).

    Attributes:
        enabled: sample with the session's LoRA and record the batch as its pending round.
        session: the session's name (created on first use).
        feedback: an answer to the pending round before sampling, e.g. ``"+ - 0 +"`` ('' for none).
        update: run one PAPA update before sampling (when there is new feedback).
        strength: learning strength (``papa_core.trust_region.STRENGTHS``).
        export: write the LoRA (after the update) to ``models/Lora/<export>.safetensors`` ('' for none).
        preset: what the person teaches (``papa_core.update.TEACHING_PRESETS``): ``default``, what the
            images show; ``style``, how every image looks.
    """

    enabled: bool = False
    session: str = "papa"
    feedback: str = ""
    update: bool = False
    strength: str = DEFAULT_STRENGTH
    export: str = ""
    preset: str = "default"

    @classmethod
    def from_args(cls, args: tuple) -> "Request":
        if len(args) > 7:
            raise PapaError("PAPA takes at most 7 arguments (enabled, session, feedback, update, strength, export, "
                            f"preset), got {len(args)}")
        req = cls(*args)
        if req.enabled:
            validate_session_name(req.session)
            if req.strength not in STRENGTHS:
                raise PapaError(f"strength must be one of {', '.join(STRENGTHS)}, got {req.strength!r}")
            check_preset(req.preset)
        return req


def check_preset(preset: str) -> None:
    if preset not in TEACHING_PRESETS:
        raise PapaError(f"preset must be one of {', '.join(TEACHING_PRESETS)} (default: you teach what the images "
                        f"show; style: how every image looks), got {preset!r}")


def open_session(sd_model, name: str) -> tuple[Session, forge_model.ModelInfo]:
    """The session ``name`` for Forge's loaded checkpoint, created (zero LoRA) on first use."""
    info = forge_model.inspect_model(sd_model)
    with torch.inference_mode(False):
        sess = store().open_or_create(name, forge_model.base_fingerprint(sd_model, info), LORA_CONFIG,
                                      init_lora_state(info.lora_targets(LORA_CONFIG), LORA_CONFIG),
                                      info.session_meta(LORA_CONFIG))
    return sess, info


def check_processing(p) -> None:
    """Refuse what PAPA cannot learn from: several batches per request, hires fix, img2img."""
    if getattr(p, "n_iter", 1) != 1:
        raise PapaError("set Batch count to 1 (use Batch size for more images): PAPA rates one batch at a time")
    if getattr(p, "enable_hr", False):
        raise PapaError("turn off Hires. fix while PAPA learns: it rates the first pass's images")
    if not 1 <= p.batch_size <= MAX_BATCH:
        raise PapaError(f"Batch size must be 1..{MAX_BATCH} while PAPA learns")


def sample_with_lora(p, name: str) -> None:
    """Make this sampling pass use the session's LoRA, as Forge's own patches on its UNet."""
    sess, info = open_session(p.sd_model, name)
    p.sd_model.forge_objects.unet = forge_model.with_lora(p.sd_model.forge_objects.unet, sess.lora_state,
                                                          sess.lora_config, info)


def record_batch(p, name: str, samples: torch.Tensor) -> Round:
    """The sampled latents ``samples`` [B, C, h, w] (the UNet's space), the prompt's conditioning and the
    seeds become the session's pending round; an unanswered pending batch is replaced (it is gone
    from the screen)."""
    sess, _ = open_session(p.sd_model, name)
    with torch.inference_mode(False):
        x0 = samples.detach().to("cpu", torch.float32).clone()
        cond = forge_model.conditioning_tensors(p.sd_model, p.c, x0.shape[0])
        with store().locked(name):
            if sess.pending_round is not None:
                log.info("PAPA: round %d of %s was not answered; the new batch replaces it", sess.pending_round.index,
                         name)
                sess.discard_pending()
            sess.add_round(x0, cond, seeds=[int(s) for s in p.seeds], meta={
                "steps": p.steps, "cfg": p.cfg_scale, "sampler": p.sampler_name, "scheduler": p.scheduler,
                "width": p.width, "height": p.height, "prompt": p.prompt, "negative_prompt": p.negative_prompt,
                "lora_version": sess.version, "host": "forge"})
            store().save(sess)
    return sess.pending_round


def answer(name: str, text: str, batch: Optional[str] = None) -> Session:
    """Record ``text`` (``"+ - 0 +"``, one symbol per image) as the answer to the pending batch; saved
    before it returns. ``batch``: the id of the images the person saw (refused if replaced)."""
    try:
        pending = store().get(name).pending_round
    except SessionNotFound:
        pending = None
    if pending is None:
        raise PapaError(f"session {name!r} has no batch waiting for an answer: generate one with PAPA enabled first")
    return store().record_answer(name, parse_feedback(text, pending.batch_size), pending.index, batch)


def run_update(sd_model, name: str, strength: str = DEFAULT_STRENGTH, preset: str = "default",
               progress=None) -> Optional[UpdateStats]:
    """One PAPA update of the session's LoRA on its new feedback, on Forge's device, with ``preset``
    (what the person teaches); None when there is no new feedback. The session is saved; on any error
    it keeps its previous LoRA."""
    from .forge_denoiser import ForgeDenoiser

    if strength not in STRENGTHS:
        raise PapaError(f"strength must be one of {', '.join(STRENGTHS)}, got {strength!r}")
    check_preset(preset)
    sess, info = open_session(sd_model, name)
    if not sess.untrained_rounds():
        return None
    config = update_preset(preset, strength=STRENGTHS[strength])
    with torch.inference_mode(False):
        den = ForgeDenoiser(sd_model, info, sess.lora_config)
        with store().locked(name):
            stats = update(sess, den, config, progress=progress)
            store().save(sess)
    log.info("PAPA update of %s: %d images, %d steps, model moved %s, %.1f s", name, stats.images, stats.steps,
             "-" if stats.change is None else f"{100 * stats.change:.1f}%", stats.seconds)
    return stats


def export(name: str, filename: str, loras_dir: Optional[str] = None, if_exists: str = "new version") -> Path:
    """Write the session's LoRA to ``<models/Lora>/<filename>.safetensors``; returns the path."""
    if loras_dir is None:
        from modules import shared

        loras_dir = shared.cmd_opts.lora_dir
    path, _ = export_session(store().get(name), loras_dir, filename, if_exists)
    log.info("PAPA: exported %s to %s", name, path)
    return path


def status_line(sess: Session) -> str:
    """One line for the panel and the images' infotext: rounds, answers, updates, the last update's size."""
    s = summarize(sess)
    text = (f"session {s['session']}: {s['labelled_rounds']} rated rounds ({s['likes']} 👍, {s['dislikes']} 👎), "
            f"{s['updates']} updates")
    if s["pending_round"] is not None:
        text += f"; round {s['pending_round']['round']} ({s['pending_round']['batch_size']} images) waits for your answer"
    last = s["last_update"]
    if last is not None and last["change"] is not None:
        text += f"; the last update moved the model {100 * last['change']:.1f}% (target {100 * last['change_target']:.1f}%)"
    return text
