"""How the simulated person and the quality guards see a batch of digits."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .data import digits_16


@torch.no_grad()
def classify(classifier: torch.nn.Module, images: torch.Tensor, chunk: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted class and its probability. images: [B,1,16,16] in [-1,1] → (long [B], float [B])."""
    preds, confs = [], []
    for part in images.split(chunk):
        p = classifier(part.clamp(-1, 1).float()).softmax(-1)
        c, k = p.max(-1)
        preds.append(k)
        confs.append(c)
    return torch.cat(preds), torch.cat(confs)


@torch.no_grad()
def nearest_real_distance(images: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """RMS pixel distance (in [-1,1] units) from each image to its nearest real digit. → float [B]."""
    real = digits_16(images.device)[0].flatten(1).float()
    out = []
    for part in images.clamp(-1, 1).flatten(1).float().split(chunk):
        d2 = torch.cdist(part, real).pow(2).min(dim=1).values / real.shape[1]
        out.append(d2.sqrt())
    return torch.cat(out)


def ink_mass(images: torch.Tensor) -> torch.Tensor:
    """Mean ink in [0,1] per image (the "bold strokes" attribute). images [B,1,H,W] in [-1,1] → [B]."""
    return ((images.clamp(-1, 1) + 1) / 2).flatten(1).mean(1)


def normalised_entropy(classes: torch.Tensor, num_classes: int) -> float:
    """Entropy of the class histogram divided by log(num_classes); 1.0 is uniform, 0 one class."""
    if classes.numel() == 0 or num_classes < 2:
        return 0.0
    p = torch.bincount(classes, minlength=num_classes).double() / classes.numel()
    p = p[p > 0]
    return float(-(p * p.log()).sum() / math.log(num_classes))


@dataclass
class BatchQuality:
    confident_share: float  # share of samples classified with probability > 0.9
    nearest_real: float  # mean nearest-real-digit distance
    class_share: list[float]  # histogram of predicted classes, sums to 1


@torch.no_grad()
def batch_quality(classifier: torch.nn.Module, images: torch.Tensor, threshold: float = 0.9) -> BatchQuality:
    pred, conf = classify(classifier, images)
    hist = torch.bincount(pred, minlength=10).double() / max(1, pred.numel())
    return BatchQuality(
        confident_share=float((conf > threshold).double().mean()),
        nearest_real=float(nearest_real_distance(images).mean()),
        class_share=[round(float(h), 4) for h in hist],
    )
