"""Reductions over the rows of (N, D) point arrays, one column at a time.

numpy reduces an (N, 3) array along axis 0 or 1 with an inner loop of 3 elements: at 1M points
`xyz.min(0)` takes ~60 ms and `np.isfinite(xyz).all(1)` ~16 ms, the same per column 1-5 ms."""

from __future__ import annotations

import numpy as np


def column_min(a: np.ndarray) -> np.ndarray:
    """(D,) minimum of each column of a non-empty (N, D) array, in a's dtype."""
    return np.array([a[:, j].min() for j in range(a.shape[1])], dtype=a.dtype)


def column_max(a: np.ndarray) -> np.ndarray:
    """(D,) maximum of each column of a non-empty (N, D) array, in a's dtype."""
    return np.array([a[:, j].max() for j in range(a.shape[1])], dtype=a.dtype)


def finite_rows(a: np.ndarray) -> np.ndarray:
    """(N,) bool: the rows of (N, D) with every value finite."""
    finite = np.ones(a.shape[0], dtype=bool)
    for j in range(a.shape[1]):
        finite &= np.isfinite(a[:, j])
    return finite
