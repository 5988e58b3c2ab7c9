"""Label encoding for :mod:`set_cy.datasets`.

Raw labels as they come in the files (``1..k``, ``-1/+1``, integral floats, strings) are mapped,
for all parts of a data set together, onto ``int64`` values ``0 .. k-1`` in the sorted order of
the raw labels, so that a train/test pair always shares one encoding.
"""
from __future__ import annotations

from typing import List, Tuple

import numpy as np

__all__: list = []  # private helper only; the public names live in set_cy.datasets


def _encode_labels(*parts: np.ndarray) -> Tuple[List[np.ndarray], int]:
    """Map the labels of all parts together onto ``0 .. k-1`` (sorted order of the raw labels)."""
    flat = [np.asarray(p).reshape(-1) for p in parts]
    sizes = [f.shape[0] for f in flat]
    allv = np.concatenate(flat) if flat else np.empty(0)
    if allv.dtype.kind == "f":
        if not np.all(np.isfinite(allv)):
            raise ValueError("labels contain NaN or infinite values")
        if np.all(allv == np.round(allv)):
            allv = allv.astype(np.int64)
    elif allv.dtype.kind in "iub":
        allv = allv.astype(np.int64)
    classes, inverse = np.unique(allv, return_inverse=True)
    inverse = inverse.reshape(-1).astype(np.int64)
    out = []
    start = 0
    for s in sizes:
        out.append(inverse[start : start + s])
        start += s
    return out, int(classes.shape[0])
