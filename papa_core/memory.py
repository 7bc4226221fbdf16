"""How many (image, t) pairs an update puts in one forward/backward pass — chosen from the memory the
host reports free, refined by what a pass measurably uses, and halved when a pass runs out of memory.

The pass size never changes the update's result (the objective sums the same pairs in any chunking),
only its speed and peak memory, so the sizer may change it between steps, or retry a step with a
smaller one, freely. Three modes, one user-facing choice:

- ``auto``: where free memory is known (a GPU), the first step runs one pair per pass and measures
  its peak; later steps use as many pairs as fit in ``margin`` × the free memory. Where it is not
  known (the CPU), ``default_pairs``.
- ``low VRAM``: one pair per pass with gradient checkpointing: the least memory, the slowest.
- ``fast``: every pair of a step in one pass, no checkpointing; out-of-memory still falls back.

On an out-of-memory error the step is retried with half the pairs per pass, then with gradient
checkpointing; only a single checkpointed pair that does not fit is an error.
"""
from __future__ import annotations

import gc
from dataclasses import dataclass, field
from typing import Optional, Protocol

import torch

from .errors import PapaError

MEMORY_MODES = ("auto", "low VRAM", "fast")
DEFAULT_PAIRS_PER_PASS = 8  # where free memory is unknown (CPU): fast on a CPU, small enough anywhere
DEFAULT_MAX_PAIRS = 64  # the user's cap by default: a default step (12 images x 4 timesteps) fits one pass


class MemoryProbe(Protocol):
    """What the sizer reads of the device; every reading may be None (unknown)."""

    def free_bytes(self) -> Optional[int]: ...          # available to this process now

    def reset_peak(self) -> Optional[int]: ...          # start a measurement; returns bytes in use now

    def peak_bytes(self) -> Optional[int]: ...          # highest bytes in use since reset_peak

    def release(self) -> None: ...                      # give cached blocks back after an OOM


class NoProbe:
    """A device whose memory is not measured (the CPU)."""

    def free_bytes(self) -> Optional[int]:
        return None

    def reset_peak(self) -> Optional[int]:
        return None

    def peak_bytes(self) -> Optional[int]:
        return None

    def release(self) -> None:
        gc.collect()


class CudaProbe:
    """torch's CUDA allocator. ``free`` may be given by the host (ComfyUI counts its own cache)."""

    def __init__(self, device: torch.device, free=None) -> None:
        self.device = device
        self._free = free

    def free_bytes(self) -> Optional[int]:
        if self._free is not None:
            return int(self._free())
        free, _ = torch.cuda.mem_get_info(self.device)
        return int(free + torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device))

    def reset_peak(self) -> Optional[int]:
        torch.cuda.reset_peak_memory_stats(self.device)
        return int(torch.cuda.memory_allocated(self.device))

    def peak_bytes(self) -> Optional[int]:
        return int(torch.cuda.max_memory_allocated(self.device))

    def release(self) -> None:
        gc.collect()
        torch.cuda.empty_cache()


def probe_for(device: torch.device) -> MemoryProbe:
    return CudaProbe(device) if device.type == "cuda" else NoProbe()


def is_out_of_memory(e: BaseException) -> bool:
    """torch's OOM error, or the RuntimeError some backends raise instead."""
    return isinstance(e, torch.OutOfMemoryError) or (isinstance(e, RuntimeError) and "out of memory" in str(e))


@dataclass
class PassSizer:
    """The pairs per pass and gradient checkpointing of one update, adapted step by step.

    Attributes:
        mode: one of MEMORY_MODES.
        probe: the device's memory readings.
        max_pairs: the most pairs a pass may hold (the user's cap).
        pairs: the current pass size.
        checkpointing: recompute activations in backward (less memory, ~30 % more compute).
        margin: share of the free memory a pass may use (the rest is left to the host and fragmentation).
        oom_retries: steps retried after running out of memory.
        peak_bytes: the highest memory a pass of this update used (None where not measured).
        notes: what the sizer did, in words (for the node's stats).
    """

    mode: str
    probe: MemoryProbe
    max_pairs: int
    pairs: int
    checkpointing: bool
    margin: float = 0.85
    oom_retries: int = 0
    peak_bytes: Optional[int] = None
    notes: list = field(default_factory=list)
    _measuring: bool = False
    _free: Optional[int] = None
    _base: Optional[int] = None

    @classmethod
    def start(cls, mode: str, probe: MemoryProbe, max_pairs: int, checkpointing: bool = False,
              default_pairs: int = DEFAULT_PAIRS_PER_PASS, first_pairs: int = 1) -> "PassSizer":
        """``first_pairs``: the size of ``auto``'s measuring pass (e.g. one image's timesteps, so the
        objective's whole-image shortcut still applies)."""
        if mode not in MEMORY_MODES:
            raise PapaError(f"memory mode must be one of {', '.join(MEMORY_MODES)}, got {mode!r}")
        if not isinstance(max_pairs, int) or max_pairs < 1:
            raise PapaError(f"pairs per pass must be ≥ 1, got {max_pairs!r}")
        if mode == "low VRAM":
            return cls(mode, probe, max_pairs, 1, True)
        if mode == "fast":
            return cls(mode, probe, max_pairs, max_pairs, checkpointing)
        if probe.free_bytes() is None:  # nothing to measure: the default (capped by the user's maximum)
            return cls(mode, probe, max_pairs, min(default_pairs, max_pairs), checkpointing)
        return cls(mode, probe, max_pairs, max(1, min(first_pairs, max_pairs)), checkpointing, _measuring=True)

    def before_step(self) -> None:
        """Start the step's peak reading; free memory is read only for ``auto``'s measuring step."""
        if self._measuring:
            self._free = self.probe.free_bytes()
        self._base = self.probe.reset_peak()

    def after_step(self) -> None:
        """A step succeeded: note its peak; in ``auto``, size the next passes from the first measurement."""
        peak = self.probe.peak_bytes()
        if peak is not None:
            self.peak_bytes = max(self.peak_bytes or 0, peak)
        if not self._measuring or None in (peak, self._free, self._base):
            return
        self._measuring = False
        per_pair = max(peak - self._base, 1) / self.pairs
        fit = int(self.margin * self._free // per_pair)
        new = max(1, min(self.max_pairs, fit))
        self.notes.append(f"a pass used {per_pair / 2**20:.0f} MiB per pair of {self._free / 2**30:.1f} GiB free: "
                          f"{new} pairs per pass")
        self.pairs = new

    def shrink(self, why: str = "out of memory") -> None:
        """Out of memory (``why``: the error's text): halve the pass, then turn on checkpointing; raise
        PapaError when nothing smaller is left."""
        self.probe.release()
        self.oom_retries += 1
        self._measuring = False
        if self.pairs > 1:
            self.pairs //= 2
            self.notes.append(f"out of memory: retried with {self.pairs} pairs per pass")
        elif not self.checkpointing:
            self.checkpointing = True
            self.notes.append("out of memory: retried with gradient checkpointing")
        else:
            raise PapaError(f"the update runs out of memory even with one pair per pass and gradient checkpointing "
                            f"({why}): free GPU memory (close other programs, unload other models) or use a smaller "
                            "image size; the session is unchanged")
