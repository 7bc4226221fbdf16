"""Feedback as people type it: one symbol per image, or a rating scale mapped to weights."""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence

from .errors import FeedbackError

SYMBOLS: dict[str, float] = {"+": 1.0, "-": -1.0, "0": 0.0, "👍": 1.0, "👎": -1.0, "y": 1.0, "n": -1.0,
                             "like": 1.0, "dislike": -1.0, "skip": 0.0}


def check_feedback(values: Any, batch_size: Optional[int] = None) -> list[float]:
    """The one rule for stored feedback: a list of one finite number in [-1, 1] per image.

    Applied to typed text, to the browser's answer and to what a session file holds on load.
    Returns the values as floats; raises FeedbackError naming the bad entry.
    """
    if not isinstance(values, (list, tuple)):
        raise FeedbackError(f"feedback must be a list of numbers, one per image, got {type(values).__name__}")
    out = []
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or abs(v) > 1:
            number = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            raise FeedbackError(f"feedback[{i}] = {v!r} must be a number in [-1, 1]"
                                + (" (it is outside [-1, 1])" if number else "") + ": 1 like, -1 dislike, 0 neutral")
        out.append(float(v))
    if batch_size is not None and len(out) != batch_size:
        raise FeedbackError(f"got {len(out)} feedback values for a batch of {batch_size} images: give exactly one per "
                            "image (+ like, - dislike, 0 neutral)")
    return out


def parse_feedback(text: str, batch_size: int) -> list[float]:
    """Parse ``"+ - 0 +"`` (spaces or commas optional: ``"+-0+"`` works too) into [1, -1, 0, 1].

    Numbers in [-1, 1] are accepted as graded feedback (``"0.5 -1 1"``). Raises FeedbackError with
    the offending symbol or the count mismatch.
    """
    if not isinstance(text, str):
        raise FeedbackError(f"feedback must be text like '+ - 0 +', got {type(text).__name__}")
    tokens = text.replace(",", " ").split()
    if len(tokens) == 1 and len(tokens[0]) > 1 and set(tokens[0]) <= set("+-0"):
        tokens = list(tokens[0])  # "+-0+" typed without spaces
    values = []
    for tok in tokens:
        t = tok.lower()
        if t in SYMBOLS:
            values.append(SYMBOLS[t])
            continue
        try:
            v = float(t)
        except ValueError:
            raise FeedbackError(f"unknown feedback symbol {tok!r}: use + (like), - (dislike), 0 (neutral) or a number "
                                "in [-1, 1], one per image") from None
        values.append(v)
    if len(values) != batch_size:
        raise FeedbackError(f"got {len(values)} feedback symbols for a batch of {batch_size} images: give exactly one "
                            "per image, e.g. '" + " ".join(["+"] * min(batch_size, 4)) + ("…'" if batch_size > 4 else "'"))
    return check_feedback(values)


def ratings_to_feedback(ratings: Sequence[int], scale: int = 5) -> list[float]:
    """Map ratings 1..scale linearly onto [-1, 1]; the middle of an odd scale is neutral (0, no gradient)."""
    if scale < 2:
        raise FeedbackError("a rating scale needs at least 2 levels")
    out = []
    for r in ratings:
        if not isinstance(r, int) or not 1 <= r <= scale:
            raise FeedbackError(f"rating {r!r} is outside 1..{scale}")
        out.append(2.0 * (r - 1) / (scale - 1) - 1.0)
    return out
