"""The ComfyUI nodes: thin declarations over papa_core (classic V1 API, ComfyUI ≥ 0.3.15).

Every node keeps its state in ``state`` (the session store), never on ``self``: ComfyUI drops node
instances freely. ComfyUI modules are imported inside the methods, so this file imports without
a running ComfyUI (the node layer's unit tests rely on that).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from ..papa_core.errors import PapaError, SessionNotFound
from ..papa_core.feedback import parse_feedback
from ..papa_core.lora import TARGET_PRESETS, LoraConfig, init_lora_state
from ..papa_core.lora_io import export_lora
from ..papa_core.memory import DEFAULT_MAX_PAIRS, MEMORY_MODES, PassSizer
from ..papa_core.session import validate_session_name
from ..papa_core.summary import progress_image, summarize
from ..papa_core.update import UPDATE_PRESETS, update, update_preset
from . import state
from .service import apply_session_action, discard_batch, record_answer, send, send_status
from .export_path import IF_EXISTS, lora_output_path
from .protocol import EVENTS, MAX_BATCH, PROTOCOL_VERSION
from .waiting import FeedbackCancelled, FeedbackTimeout

log = logging.getLogger("papa")
CATEGORY = "PAPA"
SESSION = "PAPA_SESSION"
ALGORITHMS = ("EPAPA", "PAPA")
UPDATE_PRESET_NAMES = ("default", "reference", "liked_only", "dpo")
SESSION_ACTIONS = {"undo last update": "undo", "reset": "reset", "recover": "recover",  # menu text -> action
                   "discard pending batch": "discard"}


@dataclass(frozen=True)
class SessionRef:
    """What flows along PAPA_SESSION links: the session's name and adapter shape, not its state."""

    name: str
    lora_config: LoraConfig


# --- helpers shared by the nodes -----------------------------------------------------------------

def _prompt_id():
    try:
        from server import PromptServer
        return getattr(PromptServer.instance, "last_prompt_id", None)
    except (ImportError, AttributeError):
        return None


def _open_session(ref: SessionRef, model, info):
    """Open the session for this MODEL, creating it (and its zero LoRA) on first use."""
    from .comfy_model import base_fingerprint

    meta = {"base_model": info.base_model, "family": info.family, "kohya_naming": info.kohya_naming,
            "prediction": info.prediction}
    targets = info.lora_targets(ref.lora_config)
    if info.kohya_naming == "ldm":
        meta["ldm_names"] = {n: info.ldm_of[n] for n in targets}
    with torch.inference_mode(False):
        return state.store().open_or_create(ref.name, base_fingerprint(model, info), ref.lora_config,
                                            init_lora_state(targets, ref.lora_config), meta)


def _get_session(ref: SessionRef):
    try:
        return state.store().get(ref.name)
    except SessionNotFound as e:
        raise PapaError(f"{e}. Run PAPA Generate Batch with this session first") from None


def _image_tensor(arr) -> torch.Tensor:
    return torch.from_numpy(arr).float().div(255.0).unsqueeze(0)


# --- nodes ---------------------------------------------------------------------------------------

class PAPASession:
    DESCRIPTION = ("Create or resume a named PAPA session: the in-memory LoRA, its optimizer and every round of "
                   "feedback, saved under ComfyUI's user folder after every change.")
    CATEGORY = CATEGORY
    FUNCTION = "run"
    RETURN_TYPES = (SESSION,)
    RETURN_NAMES = ("session",)
    OUTPUT_TOOLTIPS = ("The session, for the other PAPA nodes.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "session_name": ("STRING", {"default": "papa", "tooltip": "Name of the session (a folder name: letters, "
                                        "digits, '_' or '-'). An existing session with this name is resumed."}),
            "lora_rank": ("INT", {"default": 8, "min": 1, "max": 256, "tooltip": "LoRA rank r: capacity of the "
                                  "personalisation. 4-16 is plenty for a style."}),
            "lora_alpha": ("FLOAT", {"default": 8.0, "min": 0.01, "max": 1024.0, "step": 0.5, "tooltip":
                                     "LoRA alpha; the update is scaled by alpha/rank (kohya's convention)."}),
            "targets": (list(TARGET_PRESETS), {"default": "attention", "tooltip": "Which UNet layers the LoRA "
                        "adapts: attention projections, or attention plus the ResNet convolutions."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1, "control_after_generate": False,
                             "tooltip": "Seed of the LoRA's random "
                             "initialisation (it starts as an exact no-op either way)."}),
        }}

    def run(self, session_name, lora_rank, lora_alpha, targets, seed):
        name = validate_session_name(session_name.strip())
        cfg = LoraConfig(rank=int(lora_rank), alpha=float(lora_alpha), targets=targets, init_seed=int(seed))
        store = state.store()
        summary = None
        if store.exists(name):
            s = store.get(name)
            diff = s.lora_config.describe_difference(cfg)
            if diff:
                raise PapaError(f"session {name!r} exists with other LoRA settings ({'; '.join(diff)}): set them back, "
                                "or type a new session name")
            summary = summarize(s)
        return {"ui": {"papa": [summary or {"session": name, "rounds": 0}]}, "result": (SessionRef(name, cfg),)}


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
            "batch_size": ("INT", {"default": 4, "min": 1, "max": MAX_BATCH, "tooltip": "Images per round. More "
                                   "images per round give each update more signal."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff, "control_after_generate": True,
                             "tooltip": "Noise seed; image i of the batch is reproducible as batch index i."}),
            "steps": ("INT", {"default": 20, "min": 1, "max": 10000, "tooltip": "Sampling steps."}),
            "cfg": ("FLOAT", {"default": 7.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                              "tooltip": "Classifier-free guidance scale."}),
            "sampler_name": (comfy.samplers.KSampler.SAMPLERS, {"tooltip": "Sampler, as in KSampler."}),
            "scheduler": (comfy.samplers.KSampler.SCHEDULERS, {"tooltip": "Noise schedule, as in KSampler."}),
            "width": ("INT", {"default": 512, "min": 16, "max": 8192, "step": 8, "tooltip": "Image width (px)."}),
            "height": ("INT", {"default": 512, "min": 16, "max": 8192, "step": 8, "tooltip": "Image height (px)."}),
        }}

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")  # the session's LoRA changes between runs, which a link value cannot show

    def run(self, model, positive, negative, vae, session, batch_size, seed, steps, cfg, sampler_name, scheduler,
            width, height):
        import nodes as comfy_nodes

        from .comfy_model import inspect_model

        if not 1 <= batch_size <= MAX_BATCH:
            raise PapaError(f"batch_size must be 1..{MAX_BATCH}")
        info = inspect_model(model)
        sess = _open_session(session, model, info)
        r = sess.pending_round
        if r is not None:  # nothing re-generates a batch that still waits for its answer: show it again
            log.info("PAPA: round %d of %s still waits for its answer; showing that batch again instead of sampling "
                     "(PAPA Undo / Reset 'discard pending batch' drops it)", r.index, sess.name)
            out = {"samples": model.model.process_latent_out(r.x0.clone()), "shown_again": True}
        else:
            out = self._sample(model, positive, negative, sess, info, batch_size, seed, steps, cfg, sampler_name,
                               scheduler, width, height)
            r = sess.pending_round
        images = vae.decode(out["samples"])
        if images.ndim == 5:  # some VAEs return [B, T, H, W, C]
            images = images.reshape(-1, *images.shape[-3:])
        preview = comfy_nodes.PreviewImage().save_images(images, filename_prefix="papa")["ui"]["images"]
        info_ui = dict(summarize(sess), round=r.index, batch=r.batch_id, shown_again=out.get("shown_again", False))
        return {"ui": {"images": preview, "papa": [info_ui]}, "result": (images, {"samples": out["samples"]})}

    @staticmethod
    def _sample(model, positive, negative, sess, info, batch_size, seed, steps, cfg, sampler_name, scheduler, width,
                height) -> dict:
        """ComfyUI's own sampler on a clone carrying the session's LoRA; the batch becomes the pending round."""
        import nodes as comfy_nodes

        from .comfy_model import conditioning_tensors, with_lora

        sampling_model = with_lora(model, sess.lora_state, sess.lora_config, info)
        latent = {"samples": torch.zeros([batch_size, 4, height // 8, width // 8])}
        (out,) = comfy_nodes.common_ksampler(sampling_model, seed, steps, cfg, sampler_name, scheduler, positive,
                                             negative, latent)
        with torch.inference_mode(False):
            x0 = model.model.process_latent_in(out["samples"].clone().float()).clone()
            cond = {k: v.clone() for k, v in conditioning_tensors(model, positive, out["samples"]).items()}
            with state.store().locked(sess.name):
                sess.add_round(x0, cond, seeds=[int(seed)] * batch_size, meta={
                    "batch_index": list(range(batch_size)), "steps": steps, "cfg": cfg, "sampler": sampler_name,
                    "scheduler": scheduler, "width": width, "height": height, "lora_version": sess.version})
                state.store().save(sess)
        return out


class PAPARecordPreference:
    DESCRIPTION = ("Record 👍 / 👎 for the session's pending batch. With 'feedback' filled (one symbol per image: + like, "
                   "- dislike, 0 neutral) it records that and goes on, so API workflows run headless; left empty, it "
                   "shows the batch and waits for your answer in the browser (Cancel, timeout and Interrupt end the "
                   "wait). Feedback is saved to disk at once.")
    CATEGORY = CATEGORY
    FUNCTION = "run"
    OUTPUT_NODE = True  # recording feedback is the point, whether or not an update follows
    RETURN_TYPES = (SESSION,)
    RETURN_NAMES = ("session",)
    OUTPUT_TOOLTIPS = ("The session, now holding this round's feedback.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The batch from PAPA Generate Batch."}),
                "session": (SESSION, {"tooltip": "The session the batch belongs to."}),
                "feedback": ("STRING", {"default": "", "multiline": False, "tooltip": "One symbol per image: + like, "
                             "- dislike, 0 neutral (e.g. '+ - 0 +'), or numbers in [-1, 1]. Empty: answer in the "
                             "browser."}),
                "timeout_s": ("INT", {"default": 600, "min": 5, "max": 86400, "tooltip": "How long to wait for the "
                              "browser's answer (seconds); the batch stays pending after a timeout."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def run(self, images, session, feedback, timeout_s, unique_id=None):
        sess = _get_session(session)
        pending = sess.pending_round
        if pending is None:
            raise PapaError(f"session {session.name!r} has no batch waiting for feedback: connect this node after PAPA "
                            "Generate Batch (which records the batch) and queue again")
        if images.shape[0] != pending.batch_size:
            raise PapaError(f"{images.shape[0]} images came in, but the pending round has {pending.batch_size}: connect "
                            "the images output of the PAPA Generate Batch that uses this session")
        if feedback.strip():
            values = parse_feedback(feedback, pending.batch_size)
            summary = record_answer(session.name, pending.index, values)
            outcome = "text"
        else:  # the route saved the answer before it woke this node
            values = self._wait_for_browser(images, session.name, str(unique_id), pending, timeout_s)
            summary = summarize(sess)
            outcome = "browser"
        send_status(summary)
        return {"ui": {"papa": [dict(summary, round=pending.index, feedback=values, source=outcome)]},
                "result": (session,)}

    @staticmethod
    def _wait_for_browser(images, session_name, node_id, pending, timeout_s):
        import comfy.model_management
        import nodes as comfy_nodes

        preview = comfy_nodes.PreviewImage().save_images(images, filename_prefix="papa_vote")["ui"]["images"]
        prompt_id = _prompt_id()
        msg = {"protocol": PROTOCOL_VERSION, "session": session_name, "prompt_id": prompt_id, "node_id": node_id,
               "round": pending.index, "batch": pending.batch_id, "batch_size": pending.batch_size, "images": preview,
               "timeout_s": timeout_s, "summary": summarize(state.store().get(session_name))}
        w = state.broker.open(session_name, node_id, prompt_id, pending.index, pending.batch_size, request=msg)
        send(EVENTS["request"], msg)  # every open tab shows it; an answer in one closes it in the others
        outcome = "interrupted"
        try:
            values = state.broker.wait(w, timeout_s, comfy.model_management.throw_exception_if_processing_interrupted)
            outcome = "recorded"
            return values
        except FeedbackCancelled:
            outcome = "cancelled"
            discard_batch(session_name, pending.index)
            raise comfy.model_management.InterruptProcessingException() from None
        except FeedbackTimeout:
            outcome = "timeout"
            raise PapaError(f"no answer within {timeout_s} s. The batch is still pending and answerable: rate it in the "
                            "gallery (the images stay there), or type the answer into this node (e.g. '+ - 0 +') and "
                            "queue again — the same batch is shown again, no new one is sampled") from None
        finally:
            send(EVENTS["done"], dict(msg, images=None, summary=None, outcome=outcome))


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
        sess = _get_session(session)
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
        return {"ui": {"papa": [summary]}, "result": (out_model, _image_tensor(progress_image(sess)), session)}


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

        sess = _get_session(session)
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


class PAPASessionAction:
    DESCRIPTION = ("Undo the session's last update (exactly: LoRA and optimizer as before it, its feedback becomes "
                   "untrained again) or reset the session (initial LoRA, all rounds discarded). Acts on every run: "
                   "queue it on its own ('Queue selected output').")
    CATEGORY = CATEGORY
    FUNCTION = "run"
    OUTPUT_NODE = True
    RETURN_TYPES = (SESSION,)
    RETURN_NAMES = ("session",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "session": (SESSION, {"tooltip": "The session to change."}),
            "action": (list(SESSION_ACTIONS), {"tooltip": "undo last update: back to before the last PAPA Update. "
                       "reset: back to the start, deleting all rounds and feedback. recover: rebuild a session whose "
                       "session.json was lost or damaged from the newest complete version in its folder. discard "
                       "pending batch: drop the batch that waits for its answer, so the next queue samples anew."}),
        }}

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")

    def run(self, session, action):
        summary = apply_session_action(session.name, SESSION_ACTIONS[action])
        return {"ui": {"papa": [summary]}, "result": (session,)}


NODE_CLASS_MAPPINGS = {
    "PAPA_Session": PAPASession,
    "PAPA_GenerateBatch": PAPAGenerateBatch,
    "PAPA_RecordPreference": PAPARecordPreference,
    "PAPA_Update": PAPAUpdate,
    "PAPA_ExportLoRA": PAPAExportLoRA,
    "PAPA_SessionAction": PAPASessionAction,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "PAPA_Session": "PAPA Session",
    "PAPA_GenerateBatch": "PAPA Generate Batch",
    "PAPA_RecordPreference": "PAPA Record Preference",
    "PAPA_Update": "PAPA Update",
    "PAPA_ExportLoRA": "PAPA Export LoRA",
    "PAPA_SessionAction": "PAPA Undo / Reset",
}
