"""The embedded default: committed models meet their bar, and a short online loop aligns."""
import tempfile

import pytest
import torch

from papa_core.digits.data import digits_16, split_indices
from papa_core.digits.metrics import batch_quality, classify
from papa_core.digits.models import load_classifier


def test_classifier_held_out_accuracy():
    x, y = digits_16()
    _, te = split_indices(len(x))
    pred, _ = classify(load_classifier(), x[te])
    assert float((pred == y[te]).float().mean()) >= 0.97


def test_real_digits_pass_the_quality_bar():
    x, _ = digits_16()
    q = batch_quality(load_classifier(), x[:300])
    assert q.confident_share > 0.95
    assert q.nearest_real == 0.0  # they are their own nearest neighbours
