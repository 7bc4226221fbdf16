"""PAPA Session (create or resume) and PAPA Undo / Reset (undo, reset, recover, discard)."""
from __future__ import annotations

from ..papa_core.errors import PapaError
from ..papa_core.lora import TARGET_PRESETS, LoraConfig
from ..papa_core.session import validate_session_name
from ..papa_core.summary import summarize
from . import state
from .common import CATEGORY, SESSION, SessionRef
from .service import apply_session_action

SESSION_ACTIONS = {"undo last update": "undo", "reset": "reset", "recover": "recover",  # menu text -> action
                   "discard pending batch": "discard"}


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
