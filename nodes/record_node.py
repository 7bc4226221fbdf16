"""PAPA Record Preference: the person's answer for the pending batch, typed or from the in-node gallery."""
from __future__ import annotations

from ..papa_core.feedback import parse_feedback
from ..papa_core.summary import summarize
from .common import CATEGORY, SESSION, preview_images, queued_prompt_id
from .service import get_session, pending_round, record_answer, send_status, wait_for_answer
from .waiting import FeedbackCancelled


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
        pending = pending_round(session, images.shape[0])
        if feedback.strip():
            values = parse_feedback(feedback, pending.batch_size)
            summary, outcome = record_answer(session.name, pending.index, values), "text"
        else:  # the route saved the answer before it woke this wait
            import comfy.model_management

            try:
                values = wait_for_answer(session.name, str(unique_id), pending, preview_images(images, "papa_vote"),
                                         timeout_s, queued_prompt_id(),
                                         comfy.model_management.throw_exception_if_processing_interrupted)
            except FeedbackCancelled:
                raise comfy.model_management.InterruptProcessingException() from None
            summary, outcome = summarize(get_session(session)), "browser"
        send_status(summary)
        return {"ui": {"papa": [dict(summary, round=pending.index, feedback=values, source=outcome)]},
                "result": (session,)}
