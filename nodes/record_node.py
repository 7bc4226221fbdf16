"""PAPA Record Preference: the person's answer for the pending batch, typed or from the in-node gallery."""
from __future__ import annotations

from ..papa_core.errors import PapaError
from ..papa_core.feedback import parse_feedback
from ..papa_core.summary import summarize
from . import state
from .common import CATEGORY, SESSION, get_session, queued_prompt_id
from .protocol import EVENTS, PROTOCOL_VERSION
from .service import discard_batch, record_answer, send, send_status
from .waiting import FeedbackCancelled, FeedbackTimeout


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
        sess = get_session(session)
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
        prompt_id = queued_prompt_id()
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
