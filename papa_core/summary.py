"""What a session has done so far, as JSON and as a plot (for nodes, routes and the CLI alike)."""
from __future__ import annotations

from typing import Optional

import numpy as np

from .plotting import line_plot_image
from .session import Session


def summarize(session: Session) -> dict:
    """JSON-safe summary: rounds, likes, dislikes, pending batch, last update's loss, undo state."""
    likes = sum(sum(1 for v in r.feedback if v > 0) for r in session.labelled_rounds())
    dislikes = sum(sum(1 for v in r.feedback if v < 0) for r in session.labelled_rounds())
    updates = [r.update for r in session.rounds if r.update is not None and r.update.get("undo_point")]
    last_loss: Optional[float] = None
    if updates and updates[-1].get("loss"):
        last_loss = float(updates[-1]["loss"][-1])
    pending = session.pending_round
    return {
        "session": session.name,
        "version": session.version,
        "rounds": len(session.rounds),
        "labelled_rounds": len(session.labelled_rounds()),
        "likes": likes,
        "dislikes": dislikes,
        "updates": len(updates),
        "untrained_rounds": len(session.untrained_rounds()),
        "pending_round": None if pending is None else {"round": pending.index, "batch_size": pending.batch_size},
        "last_loss": last_loss,
        "can_undo": session.can_undo(),
        "last_update": _update_brief(updates[-1]) if updates else None,
        "lora": session.lora_config.to_dict(),
        "base_model": session.meta.get("base_model"),
    }


def _update_brief(stats: dict) -> dict:
    """The last update's size and cost: the relative change of the predictions (ρ) and its target, passes,
    memory (peak in GiB where measured), out-of-memory retries, time."""
    peak = stats.get("peak_bytes")
    change, target = stats.get("change"), stats.get("change_target")
    return {"change": None if change is None else round(float(change), 4),
            "change_target": None if target is None else round(float(target), 4),
            "seconds": round(float(stats.get("seconds", 0.0)), 2), "pairs_per_pass": stats.get("pairs_per_pass"),
            "checkpointing": stats.get("checkpointing"), "oom_retries": stats.get("oom_retries", 0),
            "peak_gib": None if peak is None else round(peak / 2**30, 2), "notes": stats.get("memory_notes", [])}


def round_list(session: Session) -> list[dict]:
    """Each round's feedback and whether an update used it (JSON-safe)."""
    return [{"round": r.index, "batch_size": r.batch_size, "batch": r.batch_id, "seeds": r.seeds, "feedback": r.feedback,
             "trained": r.update is not None}
            for r in session.rounds]


def like_rate_by_round(session: Session) -> tuple[list[int], list[float]]:
    """Share of likes among the non-neutral labels of each labelled round: the person's own curve."""
    xs, ys = [], []
    for r in session.labelled_rounds():
        votes = [v for v in r.feedback if v != 0]
        if votes:
            xs.append(r.index + 1)
            ys.append(sum(1 for v in votes if v > 0) / len(votes))
    return xs, ys


def progress_image(session: Session, size: tuple[int, int] = (640, 400)) -> np.ndarray:
    """Like rate per round and the (min-max normalised) mean loss of each update; uint8 [H, W, 3]."""
    series = {}
    xs, ys = like_rate_by_round(session)
    if xs:
        series["liked share"] = (xs, ys)
    ux, uy = [], []
    for r in session.rounds:
        if r.update is not None and r.update.get("undo_point") and r.update.get("loss"):
            ux.append(r.index + 1)
            uy.append(float(np.mean(r.update["loss"])))
    if uy:
        lo, hi = min(uy), max(uy)
        series[f"update loss ({lo:.3g}..{hi:.3g})"] = (ux, [(v - lo) / (hi - lo) if hi > lo else 0.5 for v in uy])
    img = line_plot_image(series, title=f"PAPA session {session.name}", xlabel="round", ylabel="share", size=size)
    return np.asarray(img, dtype=np.uint8)
