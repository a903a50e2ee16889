"""The one place that knows the laws' units.

Data, the command line and saved results use raw counts: parameters (1.22e8) and tokens (9.998e9). Laws see model
size in **millions of parameters** and tokens in **billions of tokens** (the seed paper's units), which keeps their
fitted coefficients near 1. Convert only through these functions.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MODEL_SIZE_UNIT", "TOKENS_UNIT", "model_size_to_law", "tokens_to_law", "model_size_from_law", "tokens_from_law"]

MODEL_SIZE_UNIT = 1e6  #: parameters per law unit of model size (millions)
TOKENS_UNIT = 1e9  #: tokens per law unit of data (billions)


def model_size_to_law(raw):
    """Parameters -> millions of parameters (arrays or scalars)."""
    return np.asarray(raw, dtype=np.float64) / MODEL_SIZE_UNIT


def tokens_to_law(raw):
    """Tokens -> billions of tokens (arrays or scalars)."""
    return np.asarray(raw, dtype=np.float64) / TOKENS_UNIT


def model_size_from_law(value):
    """Millions of parameters -> parameters."""
    return np.asarray(value, dtype=np.float64) * MODEL_SIZE_UNIT


def tokens_from_law(value):
    """Billions of tokens -> tokens."""
    return np.asarray(value, dtype=np.float64) * TOKENS_UNIT
