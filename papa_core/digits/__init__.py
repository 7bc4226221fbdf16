"""The embedded default: a digits DDPM and a digit classifier trained by this project.

Data: scikit-learn's bundled 8×8 digits (no download), upsampled to 16×16 in [-1, 1].
Weights live in ``assets/`` and are reproduced by ``tools/train_digits.py``.
"""
