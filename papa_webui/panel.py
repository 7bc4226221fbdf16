"""The PAPA panel in txt2img (gradio): the session, the batch waiting for an answer with 👍 / ○ / 👎 per
image, Save answers, Update, Undo, Reset, Export LoRA, and a status line. Every button runs its
``loop`` function on Forge's main thread under the generation queue's lock, so it never overlaps a
generation; each reports errors in the status line (nothing is half-done: the session is saved
only when a step succeeds).
"""
from __future__ import annotations

import threading
from typing import Callable

import gradio as gr

from papa_core.errors import PapaError
from papa_core.trust_region import DEFAULT_STRENGTH, STRENGTHS
from papa_core.update import TEACHING_PRESETS

from . import loop

CHOICES = ("👍", "○", "👎")  # per image: like, neutral, dislike
TEACHING = ("what the images show", "how every image looks")  # "You teach": the labels of TEACHING_PRESETS
_TEXT = {"👍": "+", "○": "0", "👎": "-"}
_previews: dict[str, tuple[str, list]] = {}  # session → (batch id, the images shown), this process only
_previews_lock = threading.Lock()


def remember_batch(session: str, batch: str, images: list) -> None:
    with _previews_lock:
        _previews[session] = (batch, list(images))


def _on_forge(fn: Callable, *args):
    """``fn(*args)`` on Forge's main thread, between generations; its exception re-raised here."""
    from modules.call_queue import queue_lock
    from modules_forge import main_thread

    def run():
        try:
            return True, fn(*args)
        except Exception as e:  # noqa: BLE001 — carried to the caller, which shows it
            return False, e

    with queue_lock:
        ok, value = main_thread.run_and_wait_result(run)
    if not ok:
        raise value
    return value


def _view(session: str, note: str = "") -> list:
    """The panel's outputs for ``session``: gallery, one rating per image slot, status line."""
    try:
        sess = loop.store().get(session)
        status = loop.status_line(sess)
        pending = sess.pending_round
    except PapaError as e:
        return [gr.update(value=[]), *[gr.update(visible=False)] * loop.MAX_BATCH, f"⚠ {e}"]
    batch, images = _previews.get(session, (None, []))
    shown = pending is not None and batch == pending.batch_id
    if pending is not None and not shown:
        status += " (its images are not in this window: generate a new batch)"
    n = pending.batch_size if shown else 0
    radios = [gr.update(visible=i < n, value="○") for i in range(loop.MAX_BATCH)]
    return [gr.update(value=images if shown else []), *radios, (f"{note} — " if note else "") + status]


def _act(session: str, work: Callable[[], str]) -> list:
    try:
        note = work()
    except (PapaError, ValueError) as e:
        return _view(session, f"⚠ {e}")
    return _view(session, note)


def build() -> tuple[list, Callable]:
    """The panel. Returns the script's arguments (``loop.Request`` order) and ``show(event)``, which makes
    an event (the output gallery's change after a generation) show the new batch in the panel."""
    from modules.ui_components import InputAccordion

    with InputAccordion(False, label="PAPA: learn from 👍 / 👎", elem_id="papa_enabled") as enabled:
        with gr.Row():
            session = gr.Textbox("papa", label="Session", elem_id="papa_session", scale=2)
            strength = gr.Radio(list(STRENGTHS), value=DEFAULT_STRENGTH, label="Learning strength",
                                elem_id="papa_strength", scale=3)
            preset = gr.Radio(list(zip(TEACHING, TEACHING_PRESETS)), value=TEACHING_PRESETS[0], label="You teach",
                              elem_id="papa_preset", scale=3)
        gallery = gr.Gallery(label="Batch waiting for your answer", columns=4, height=260, elem_id="papa_gallery",
                             interactive=False, type="pil", object_fit="contain")
        with gr.Row():
            ratings = [gr.Radio(list(CHOICES), value="○", label=f"Image {i + 1}", visible=False, min_width=120,
                                elem_id=f"papa_rate_{i}") for i in range(loop.MAX_BATCH)]
        gr.Markdown("Keys, with the pointer over this panel: 1-9 pick an image, ↑ 👍, ↓ 👎, 0 ○, Enter saves "
                    "(javascript/papa_keys.js).", elem_id="papa_keys_hint")
        with gr.Row():
            save = gr.Button("Save answers", variant="primary", elem_id="papa_save")
            update = gr.Button("Update", elem_id="papa_update")
            undo = gr.Button("Undo update", elem_id="papa_undo")
            reset = gr.Button("Reset", elem_id="papa_reset")
            refresh = gr.Button("Show batch", elem_id="papa_refresh")
        with gr.Row():
            export_name = gr.Textbox("papa_lora", label="LoRA name (models/Lora)", elem_id="papa_export_name")
            export = gr.Button("Export LoRA", elem_id="papa_export")
        status = gr.Markdown("Open this panel and press Generate: the batch appears here to rate.",
                             elem_id="papa_status")
        # headless arguments of a txt2img request (loop.Request); the buttons do these in the UI
        feedback_arg = gr.Textbox("", visible=False)
        update_arg = gr.Checkbox(False, visible=False)
        export_arg = gr.Textbox("", visible=False)
    outputs = [gallery, *ratings, status]

    def save_answers(name, *marks):
        pending = loop.store().get(name).pending_round
        if pending is None:
            raise PapaError("no batch waits for an answer: generate one first")
        batch = _previews.get(name, (None,))[0]
        text = " ".join(_TEXT[m] for m in marks[: pending.batch_size])
        loop.answer(name, text, batch)
        return f"saved {text}"

    def run_update(name, level, preset_name):
        stats = _on_forge(lambda: loop.run_update(_sd_model(), name, level, preset_name))
        return "no new answers to learn from" if stats is None else f"updated in {stats.seconds:.1f} s"

    save.click(lambda n, *m: _act(n, lambda: save_answers(n, *m)), [session, *ratings], outputs)
    update.click(lambda n, s, t: _act(n, lambda: run_update(n, s, t)), [session, strength, preset], outputs)
    undo.click(lambda n: _act(n, lambda: (loop.store().apply_action(n, "undo"), "undone")[1]), [session], outputs)
    reset.click(lambda n: _act(n, lambda: (loop.store().apply_action(n, "reset"), "reset to the start")[1]),
                [session], outputs)
    export.click(lambda n, f: _act(n, lambda: f"exported {loop.export(n, f).name}"), [session, export_name], outputs)
    refresh.click(_view, [session], outputs)
    return [enabled, session, feedback_arg, update_arg, strength, export_arg, preset], \
        lambda event: event(_view, [session], outputs)


def _sd_model():
    from modules import shared

    return shared.sd_model
