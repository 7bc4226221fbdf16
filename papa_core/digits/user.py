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


def binary_feedback(pref: Preference, images: torch.Tensor) -> list[float]:
    return [1.0 if v else -1.0 for v in pref.liked(images).tolist()]
