"""The simulated person: a digit classifier that answers thumbs up / down (or a grade)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from .metrics import classify, ink_mass


class Preference(Protocol):
    name: str

    def score(self, images: torch.Tensor) -> torch.Tensor:
        """Graded feedback in [-1, 1] per image. images [B,1,16,16] in [-1,1] → float [B]."""

    def liked(self, images: torch.Tensor) -> torch.Tensor:
        """bool [B]."""


@dataclass
class ClassPreference:
    """The paper's task: liked ⇔ the classifier reads a digit in ``classes``."""

    classifier: torch.nn.Module
    classes: tuple[int, ...] = (1, 4, 7, 9)

    @property
    def name(self) -> str:
        return "digits " + "/".join(map(str, self.classes))

    @torch.no_grad()
    def liked(self, images: torch.Tensor) -> torch.Tensor:
        pred, _ = classify(self.classifier, images)
        return torch.isin(pred, torch.tensor(self.classes, device=pred.device))

    @torch.no_grad()
    def score(self, images: torch.Tensor) -> torch.Tensor:
        """2·P(class ∈ set) − 1: confident likes near +1, ambiguous digits near 0."""
        p = self.classifier(images.clamp(-1, 1).float()).softmax(-1)[:, list(self.classes)].sum(-1)
        return 2 * p - 1


@dataclass
class BoldPreference:
    """A fine-grained attribute: liked ⇔ ink mass above ``threshold`` (bold strokes)."""

    threshold: float

    name: str = "bold strokes"

    def liked(self, images: torch.Tensor) -> torch.Tensor:
        return ink_mass(images) > self.threshold

    def score(self, images: torch.Tensor) -> torch.Tensor:
        return ((ink_mass(images) - self.threshold) * 20).clamp(-1, 1)


@dataclass(frozen=True)
class Answering:
    """How the simulated person answers, beyond what it likes: a real person is not an oracle.

    Attributes:
        flip: share of 👍 / 👎 answers that come out the other way (mistakes, changes of mind).
        skip_margin: images whose graded score |score| is below this get the neutral answer 0
            ("not sure"); the score is ``Preference.score`` (class task: 2·P(liked class) − 1).
    """

    flip: float = 0.0
    skip_margin: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.flip <= 0.5:
            raise ValueError(f"flip must be a share in [0, 0.5], got {self.flip!r}")
        if not 0 <= self.skip_margin < 1:
            raise ValueError(f"skip_margin must be in [0, 1), got {self.skip_margin!r}")


def binary_feedback(pref: Preference, images: torch.Tensor, answering: Answering = Answering(),
                    generator: torch.Generator | None = None) -> list[float]:
    """One answer per image: +1 liked, −1 disliked, 0 skipped. Skipped images are never flipped."""
    y = torch.where(pref.liked(images).cpu(), 1.0, -1.0)
    if answering.flip > 0:
        y = torch.where(torch.rand(len(y), generator=generator) < answering.flip, -y, y)
    if answering.skip_margin > 0:
        y = torch.where(pref.score(images).cpu().abs() < answering.skip_margin, torch.zeros_like(y), y)
    return y.tolist()
