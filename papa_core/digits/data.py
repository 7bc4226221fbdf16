"""scikit-learn's bundled digits as 16×16 images in [-1, 1]."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

IMAGE_SIZE = 16


@lru_cache(maxsize=1)
def _load() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the digits demo needs scikit-learn (it ships the data): pip install scikit-learn"
        ) from e
    d = load_digits()
    return d.images.astype(np.float32), d.target.astype(np.int64)


def digits_16(device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 digits.

    Returns:
        images: float32 [N, 1, 16, 16] in [-1, 1] (bilinear upsampling of the 8×8 originals, 0..16 ink).
        labels: long [N] in 0..9.
    """
    images, labels = _load()
    x = torch.from_numpy(images).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    x = x.clamp(0, 1) * 2 - 1
    return x.to(device), torch.from_numpy(labels).to(device)


def split_indices(n: int, test_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fixed train / held-out split (the classifier's accuracy is reported on the held-out part)."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    k = int(round(n * test_fraction))
    return np.sort(perm[k:]), np.sort(perm[:k])
