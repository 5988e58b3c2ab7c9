"""The rules of dynamic sparse training: what an evolution step drops, where it grows, and when.

An evolution step of a layer asks a **drop rule** which stored connections to remove and a **grow
rule** where to put as many new ones; the layer applies the rewrite itself
(:meth:`set_cy.layers.SparseLayer.evolve`). Rules are chosen by name or given as small objects:

- drop rules (``criterion=``): :class:`SignedMagnitude` (``"signed"``, SET's: the fraction ζ of the
  non-negative weights closest to zero and ζ of the negative ones), :class:`Magnitude`
  (``"magnitude"``, the smallest ``|w|``), :class:`MomentumMagnitude` (``"momentum"``, the smallest
  ``|velocity|``), :class:`GradientMagnitude` (``"gradient"``, the smallest ``|dL/dW|`` over a
  mini-batch). Any object with ``select(values, zeta, *, velocity) -> sorted int64 indices`` is one
  (with ``needs_gradient = True`` it is also given ``gradient=``, the gradient at the connections).
- grow rules (``grow=``): :class:`RandomGrowth` (``"random"``, SET's: uniform among the free
  positions) and :class:`GradientGrowth` (``"gradient"``, RigL's criterion kept truly sparse: draw
  ``candidates x count`` free positions, compute ``|dL/dW|`` there with one SDDMM over a mini-batch,
  grow the largest). Any object with ``needs_gradient`` and ``grow(rng, n_rows, n_cols, count, indptr,
  indices, *, inputs, score, n_threads) -> (indptr, indices)`` is one; ``score(indptr, indices)``,
  given to rules that need the gradient, returns the gradient at the positions of a pattern.
- when: :func:`zeta_at` (the fraction of an epoch under a schedule).

Positions are CSR patterns of ``W^T`` (rows: output neurons, columns: input neurons); no rule needs an
array of size ``n_in x n_out``.
"""
import math

import numpy as np

from . import patterns as pt
from ._validation import check_int, check_scalar

__all__ = ["CRITERIA", "GROW_RULES", "NEW_WEIGHTS", "SCHEDULES", "DropRule", "GrowRule", "SignedMagnitude",
           "Magnitude", "MomentumMagnitude", "GradientMagnitude", "RandomGrowth", "GradientGrowth", "make_drop_rule",
           "make_grow_rule", "needs_gradient", "check_evolution_args", "select_to_remove", "zeta_at"]

#: Names of the drop rules: ``"signed"`` (SET: the fraction ζ of the non-negative weights closest to
#: zero and ζ of the negative ones), ``"magnitude"`` (the smallest ``|w|``), ``"momentum"`` (the smallest
#: ``|velocity|``, sparse momentum's criterion), ``"gradient"`` (the smallest ``|dL/dW|`` over a mini-batch).
CRITERIA = ("signed", "magnitude", "momentum", "gradient")
#: Names of the grow rules: ``"random"`` (SET) and ``"gradient"`` (the largest ``|dL/dW|`` among sampled
#: free positions).
GROW_RULES = ("random", "gradient")
#: The value of a regrown connection: drawn as at initialisation (``"init"``) or zero.
NEW_WEIGHTS = ("init", "zeros")


def check_evolution_args(zeta, criterion, new_weights, *, below_one=False):
    """Validated ``zeta`` of an evolution step; ValueError naming a bad ``zeta``, ``criterion``, ``new_weights``."""
    zeta = check_scalar(zeta, "zeta", min_val=0.0, max_val=1.0, include_max=not below_one)
    make_drop_rule(criterion)
    if new_weights not in NEW_WEIGHTS:
        raise ValueError(f"new_weights must be one of {NEW_WEIGHTS}, got {new_weights!r}")
    return zeta


#: How ζ changes over the epochs (:func:`zeta_at`).
SCHEDULES = ("constant", "linear", "cosine")


def select_to_remove(values, zeta, criterion="signed"):
    """Indices (sorted) of the connections to remove by weight: the work of the magnitude drop rules.

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
        raise ValueError(f"criterion must be one of ('signed', 'magnitude'), got {criterion!r}")
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


# ------------------------------------------------------------------------------------------------------
# drop rules
class DropRule:
    """What an evolution step removes. Subclass and override :meth:`select` (or write any object with
    the same method): ``values`` and ``velocity`` are the layer's arrays in its storage order (read only).
    ``needs_gradient = True`` asks for ``gradient=`` too: the gradient of the loss at the connections,
    in the same order, over a mini-batch."""

    name = None
    needs_gradient = False

    def select(self, values, zeta, *, velocity):
        """Sorted int64 indices of the stored connections to remove (about ``zeta * len(values)``)."""
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}()"


class SignedMagnitude(DropRule):
    """SET's rule: the fraction ζ of the non-negative weights closest to zero and ζ of the negative ones."""

    name = "signed"

    def select(self, values, zeta, *, velocity=None):
        return select_to_remove(values, zeta, "signed")


class Magnitude(DropRule):
    """The fraction ζ of the connections with the smallest ``|w|``."""

    name = "magnitude"

    def select(self, values, zeta, *, velocity=None):
        return select_to_remove(values, zeta, "magnitude")


class MomentumMagnitude(DropRule):
    """The fraction ζ of the connections with the smallest ``|velocity|`` (the momentum of the SGD
    update: connections the recent gradients did not push), sparse momentum's pruning signal."""

    name = "momentum"

    def select(self, values, zeta, *, velocity):
        return select_to_remove(np.abs(velocity), zeta, "magnitude")


class GradientMagnitude(DropRule):
    """The fraction ζ of the connections with the smallest ``|dL/dW|`` over a mini-batch: those the loss
    is least sensitive to now."""

    name = "gradient"
    needs_gradient = True

    def select(self, values, zeta, *, velocity=None, gradient=None):
        if gradient is None:
            raise ValueError("the gradient drop rule needs the gradient: evolve with a mini-batch")
        return select_to_remove(np.abs(gradient), zeta, "magnitude")


_DROP = {r.name: r for r in (SignedMagnitude, Magnitude, MomentumMagnitude, GradientMagnitude)}


def make_drop_rule(rule):
    """The drop rule named ``rule`` (one of :data:`CRITERIA`), or ``rule`` itself if it has ``select``."""
    if isinstance(rule, str) and rule in _DROP:
        return _DROP[rule]()
    if not isinstance(rule, str) and callable(getattr(rule, "select", None)):
        return rule
    raise ValueError(f"criterion must be one of {CRITERIA} or an object with a select method, got {rule!r}")


# ------------------------------------------------------------------------------------------------------
# grow rules
class GrowRule:
    """Where an evolution step grows new connections. Subclass and override :meth:`grow`.

    ``needs_gradient = True`` asks the network for ``score``: a function of a CSR pattern (``indptr``,
    ``indices``, positions of ``W^T``) that returns the gradient of the loss at those positions (one
    SDDMM over a mini-batch).
    """

    name = None
    needs_gradient = False

    def grow(self, rng, n_rows, n_cols, count, indptr, indices, *, inputs=None, score=None, n_threads=1):
        """Canonical CSR pattern ``(indptr, indices)`` of ``count`` free positions (not in the given pattern).

        ``inputs``: sorted columns (input neurons) to prefer, the active inputs of a network whose
        inputs were pruned, or None.
        """
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}()"


def _free_positions(rng, n_rows, n_cols, count, indptr, indices, inputs, n_threads):
    if inputs is None:
        return pt.draw_free_positions(rng, n_rows, n_cols, count, indptr, indices, n_threads=n_threads)
    return pt.draw_free_positions_in(rng, n_rows, n_cols, count, indptr, indices, inputs, n_threads=n_threads)


class RandomGrowth(GrowRule):
    """SET's rule: new connections uniformly among the free positions (the active inputs' first)."""

    name = "random"

    def grow(self, rng, n_rows, n_cols, count, indptr, indices, *, inputs=None, score=None, n_threads=1):
        return _free_positions(rng, n_rows, n_cols, count, indptr, indices, inputs, n_threads)


class GradientGrowth(GrowRule):
    """Grow where the loss falls fastest, among sampled free positions (RigL's criterion, truly sparse).

    ``candidates x count`` free positions compete: drawn uniformly, ``|dL/dW|`` computed there with
    ``score`` (one SDDMM over a mini-batch), the ``count`` largest grow. When the layer has few free
    cells (at most ``4 x candidates x count``) they are drawn without repeats among the free cells
    (all of them when there are fewer than ``candidates x count``). Otherwise they are streamed in
    chunks of at most 1,048,576: each chunk's cells are drawn uniformly, stored ones discarded, and
    only those above the running ``count``-th largest magnitude (about: a margin of 1 % is kept) are
    kept, so the working memory is about ``16 x count`` bytes plus a chunk, whatever ``candidates``;
    a cell drawn twice counts once, and the rare shortfall this could leave is filled with uniform
    free positions. No dense gradient.
    ``candidates=1`` is random growth that spends a gradient; RigL's dense rule is the limit of
    ``candidates`` covering every free cell.

    Parameters
    ----------
    candidates : int, default 10
        Free positions drawn per connection to grow.
    """

    name = "gradient"
    needs_gradient = True
    CHUNK = 1 << 20

    def __init__(self, candidates=10):
        self.candidates = check_int(candidates, "grow_candidates", min_val=1)

    def grow(self, rng, n_rows, n_cols, count, indptr, indices, *, inputs=None, score=None, n_threads=1):
        if score is None:
            raise ValueError("gradient growth needs the gradient: evolve with a mini-batch (the network passes "
                             "score)")
        count = int(count)
        width = n_cols if inputs is None else len(inputs)
        stored = indices.shape[0] if inputs is None else int(np.count_nonzero(np.isin(indices, inputs)))
        free = int(n_rows) * int(width) - stored
        if free <= 4 * self.candidates * count:
            return self._among_drawn(rng, n_rows, n_cols, count, indptr, indices, inputs, score, n_threads)
        return self._streamed(rng, n_rows, n_cols, count, indptr, indices, inputs, score, n_threads)

    def _among_drawn(self, rng, n_rows, n_cols, count, indptr, indices, inputs, score, n_threads):
        """Few free cells: ``candidates x count`` of them drawn without repeats (all, if fewer), the top grow."""
        free = int(n_rows) * int(n_cols) - int(indices.shape[0])
        drawn = min(free, self.candidates * count)
        c_indptr, c_indices = _free_positions(rng, n_rows, n_cols, drawn, indptr, indices, inputs, n_threads)
        if drawn == count:
            return c_indptr, c_indices
        magnitude = np.abs(np.asarray(score(c_indptr, c_indices), dtype=np.float64))
        keep = np.zeros(drawn, dtype=np.uint8)
        keep[np.argpartition(-magnitude, count - 1)[:count]] = 1
        return pt.drop_entries(c_indptr, c_indices, keep, n_threads)

    def _streamed(self, rng, n_rows, n_cols, count, indptr, indices, inputs, score, n_threads):
        """Many free cells: candidates streamed in chunks, a running top kept (see the class)."""
        # a few more than count are kept, so that cells drawn twice (counted once at the end) rarely leave
        # fewer than count
        room = count + max(64, count // 100)
        best_keys, best_mag = np.empty(0, np.int64), np.empty(0, np.float32)
        pending, n_pending, threshold = [], 0, -np.inf
        left = self.candidates * count
        while left > 0:
            size = min(left, self.CHUNK)
            left -= size
            c_indptr, c_indices = pt.random_positions(rng, n_rows, n_cols, size, cols=inputs,
                                                      index_dtype=indices.dtype)
            mag = np.abs(np.asarray(score(c_indptr, c_indices))).astype(np.float32, copy=False)
            # only the candidates above the running threshold are located and checked against the pattern
            cand = np.flatnonzero(mag > threshold)
            rows = (np.searchsorted(c_indptr, cand, side="right") - 1).astype(indices.dtype)
            cols = c_indices[cand]
            free = ~pt.contains((indptr, indices), rows, cols, n_threads)
            pending.append((rows[free].astype(np.int64) * n_cols + cols[free], mag[cand[free]]))
            n_pending += pending[-1][0].shape[0]
            del c_indptr, c_indices, mag, cand, rows, cols, free
            if best_keys.shape[0] < room or n_pending >= max(count // 2, self.CHUNK) or left == 0:
                best_keys, best_mag = _top(room, [(best_keys, best_mag)] + pending)
                pending, n_pending = [], 0
                threshold = best_mag.min() if best_keys.shape[0] == room else -np.inf
        keys, first = np.unique(best_keys, return_index=True)  # a cell drawn twice counts once
        keys = keys[_top(count, [(np.arange(keys.shape[0]), best_mag[first])])[0]]
        del best_keys, best_mag, first
        keys.sort()
        if keys.shape[0] < count:  # rare: fill with uniform free positions
            chosen = _pattern_of_keys(keys, n_rows, n_cols, indices.dtype)
            extra = _free_positions(rng, n_rows, n_cols, count - keys.shape[0],
                                    *pt.merge_patterns((indptr, indices), chosen, n_threads), inputs, n_threads)
            keys = np.union1d(keys, pt.row_ids(extra[0]).astype(np.int64) * n_cols + extra[1])
        return _pattern_of_keys(keys, n_rows, n_cols, indices.dtype)

    def __repr__(self):
        return f"GradientGrowth(candidates={self.candidates})"


def _top(count, parts):
    """The ``count`` largest magnitudes of the ``(keys, magnitudes)`` parts (ties: the first ones)."""
    keys = np.concatenate([k for k, _ in parts])
    mag = np.concatenate([m for _, m in parts])
    if keys.shape[0] <= count:
        return keys, mag
    cut = keys.shape[0] - count
    value = np.partition(mag, cut)[cut]
    keep = mag > value
    ties = np.flatnonzero(mag == value)[:count - int(np.count_nonzero(keep))]
    keep[ties] = True
    return keys[keep], mag[keep]


def _pattern_of_keys(keys, n_rows, n_cols, dtype):
    """The canonical CSR pattern of sorted flat keys ``row * n_cols + col``."""
    out_indptr = np.zeros(int(n_rows) + 1, dtype)
    np.cumsum(np.bincount(keys // n_cols, minlength=int(n_rows)), out=out_indptr[1:])
    return out_indptr, (keys % n_cols).astype(dtype)


_GROW = {r.name: r for r in (RandomGrowth, GradientGrowth)}


def needs_gradient(*rules):
    """Whether any of the rules asks for the gradient (``needs_gradient``)."""
    return any(getattr(r, "needs_gradient", False) for r in rules)


def make_grow_rule(rule, candidates=10):
    """The grow rule named ``rule`` (one of :data:`GROW_RULES`; ``candidates`` for ``"gradient"``), or
    ``rule`` itself if it has ``grow``."""
    if isinstance(rule, str) and rule in _GROW:
        return GradientGrowth(candidates) if rule == "gradient" else RandomGrowth()
    if not isinstance(rule, str) and callable(getattr(rule, "grow", None)):
        return rule
    raise ValueError(f"grow must be one of {GROW_RULES} or an object with a grow method, got {rule!r}")
