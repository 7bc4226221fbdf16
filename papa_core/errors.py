"""Errors the engine raises. Every message says what went wrong and what to do about it."""
from __future__ import annotations


class PapaError(ValueError):
    """Base class: bad input or state that the caller can fix."""


class FeedbackError(PapaError):
    """Feedback that does not fit the batch it is for."""


class SessionNotFound(PapaError, KeyError):
    """No session of that name in the store."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class SessionMismatch(PapaError):
    """A session (or LoRA file) made for another base model or LoRA configuration."""


class NoPairs(PapaError):
    """A pairwise preset asked to update before the images it trains on hold a like and a dislike."""


class NonFiniteError(PapaError):
    """NaN or inf in inputs, loss or gradients."""


class LoraFileError(PapaError):
    """A LoRA file that cannot be read as this session's adapter."""


class SessionCorrupt(PapaError):
    """Session files on disk that fail their integrity checks."""


class StorageError(PapaError):
    """The session folder (or the LoRA folder) could not be written: permissions, disk space."""


class SessionBusy(PapaError):
    """A session locked by other work (an update, a save) for longer than the caller may wait."""
