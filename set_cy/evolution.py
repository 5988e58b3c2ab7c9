"""Pieces of Sparse Evolutionary Training that do not depend on a layer's storage.

- :func:`select_to_remove`: which stored connections to prune (per sign, as the SET reference does,
  or by magnitude), by partial sorts: O(nnz).
- where new connections grow: :func:`set_cy.patterns.draw_free_positions` (the CSR pattern helpers
  live in :mod:`set_cy.patterns`).
- :func:`zeta_at`: the pruning fraction of an epoch under a schedule.
"""
import math

import numpy as np

from ._validation import check_scalar

__all__ = ["CRITERIA", "NEW_WEIGHTS", "SCHEDULES", "check_evolution_args", "select_to_remove", "zeta_at"]

#: What an evolution step removes: ``"signed"`` (SET: the fraction ζ of the non-negative weights
#: closest to zero and ζ of the negative ones) or ``"magnitude"`` (the smallest ``|w|``).
CRITERIA = ("signed", "magnitude")
#: The value of a regrown connection: drawn as at initialisation (``"init"``) or zero.
NEW_WEIGHTS = ("init", "zeros")


def check_evolution_args(zeta, criterion, new_weights, *, below_one=False):
    """Validated ``zeta`` of an evolution step; ValueError naming a bad ``zeta``, ``criterion``, ``new_weights``."""
    zeta = check_scalar(zeta, "zeta", min_val=0.0, max_val=1.0, include_max=not below_one)
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    if new_weights not in NEW_WEIGHTS:
        raise ValueError(f"new_weights must be one of {NEW_WEIGHTS}, got {new_weights!r}")
    return zeta


#: How ζ changes over the epochs (:func:`zeta_at`).
SCHEDULES = ("constant", "linear", "cosine")


def select_to_remove(values, zeta, criterion="signed"):
    """Indices (sorted) of the connections to remove.

    Parameters
    ----------
    values : ndarray of shape (nnz,)
        Connection weights.
    zeta : float in [0, 1]
        Fraction to remove.
    criterion : {"signed", "magnitude"}
        ``"signed"``: the fraction ``zeta`` of the non-negative weights closest to zero and the fraction
        ``zeta`` of the negative weights closest to zero (the SET reference's rule);
        ``"magnitude"``: the fraction ``zeta`` of all weights with the smallest ``|w|``.

    Returns
    -------
    ndarray of int64
    """
    n = values.shape[0]
    if criterion == "magnitude":
        k = int(round(zeta * n))
        if k == 0:
            return np.empty(0, np.int64)
        return np.sort(np.argpartition(np.abs(values), k - 1)[:k]).astype(np.int64)
    if criterion != "signed":
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    pos = np.flatnonzero(values >= 0)
    neg = np.flatnonzero(values < 0)
    parts = []
    k = int(round(zeta * pos.size))
    if k:
        parts.append(pos[np.argpartition(values[pos], k - 1)[:k]])
    k = int(round(zeta * neg.size))
    if k:
        parts.append(neg[np.argpartition(-values[neg], k - 1)[:k]])
    if not parts:
        return np.empty(0, np.int64)
    return np.sort(np.concatenate(parts)).astype(np.int64)


def zeta_at(zeta, epoch, n_epochs, schedule="constant"):
    """Pruning fraction after epoch ``epoch`` (0-based) of ``n_epochs``.

    ``"constant"``: ``zeta``; ``"linear"``: ``zeta * (1 - epoch / n_epochs)``;
    ``"cosine"``: ``zeta * (1 + cos(pi * epoch / n_epochs)) / 2``.

    Examples
    --------
    >>> from set_cy.evolution import zeta_at
    >>> [round(zeta_at(0.3, epoch, 10, "cosine"), 3) for epoch in (0, 3, 6, 9)]
    [0.3, 0.238, 0.104, 0.007]
    """
    if schedule == "constant":
        return float(zeta)
    frac = epoch / max(1, n_epochs)
    if schedule == "linear":
        return float(zeta * (1.0 - frac))
    if schedule == "cosine":
        return float(zeta * 0.5 * (1.0 + math.cos(math.pi * frac)))
    raise ValueError(f"zeta schedule must be one of {SCHEDULES}, got {schedule!r}")
