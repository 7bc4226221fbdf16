"""Setup, demo and maintenance scripts; the Python ones run from the repository root as ``python -m scripts.<name>``."""
