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
- when: :func:`zeta_at` (the fraction of an epoch under a schedule); gradual density change
  (GraNet): :func:`density_at` and :func:`shrink_at` (how many connections an update step removes
  without regrowing them).

Positions are CSR patterns of ``W^T`` (rows: output neurons, columns: input neurons); no rule needs an
array of size ``n_in x n_out``.
"""
import math

import numpy as np

from . import patterns as pt
from ._validation import check_int, check_scalar

__all__ = ["CRITERIA", "GROW_RULES", "NEW_WEIGHTS", "SCHEDULES", "DropRule", "GrowRule", "SignedMagnitude",
           "Magnitude", "MomentumMagnitude", "GradientMagnitude", "RandomGrowth", "GradientGrowth", "make_drop_rule",
           "make_grow_rule", "needs_gradient", "check_evolution_args", "select_to_remove", "zeta_at", "density_at",
           "shrink_at"]

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
    (all of them when there are fewer than ``candidates x count``). Otherwise they are streamed: how
    many candidates fall in each row is drawn first (:func:`set_cy.patterns.random_row_counts`), and
    the stream visits the rows in a strided order (rows ``j, j + m, j + 2m, ...`` for ``j = 0, 1, ...``,
    ``m`` the number of chunks) and is scored in chunks of ``CHUNK`` (1,048,576) candidates, each a CSR
    pattern with uniform columns over rows spread across the layer (one SDDMM each, which shares them
    among its threads and reads each row of the output gradient about once in all). Of a chunk only
    the candidates above a threshold are checked against the stored pattern and kept: the larger of
    the ``count``-th largest magnitude so far (about: a margin of 1 %, and of twice the share of
    candidates that repeat a cell, is kept) and a guess made on the first chunk, the value that a
    little more of that chunk exceeds than the share of all the candidates the ``count`` largest take.
    The guess is checked at the end: where fewer than ``count`` (and the margin) passed it (rare), the
    same candidates are drawn and scored again without it. The working memory is about ``26 x count``
    bytes plus ``16 x CHUNK``, whatever ``candidates``. A cell drawn twice counts once, and the rare
    shortfall this could leave is filled with uniform free positions. No dense gradient.
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
    _LOW = 0 if np.array([1], np.int64).view(np.uint32)[0] == 1 else 1  # the uint32 word of an int64's low bits

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
        return self._streamed(rng, n_rows, n_cols, count, indptr, indices, inputs, score, n_threads, free, width)

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

    def _streamed(self, rng, n_rows, n_cols, count, indptr, indices, inputs, score, n_threads, free, width):
        """Many free cells: candidates streamed in chunks of rows, a running top kept (see the class)."""
        idx, n_rows = indices.dtype, int(n_rows)
        if count == 0:
            return pt.empty_pattern(n_rows, idx)
        state = rng.bit_generator.state
        args = (n_rows, n_cols, count, indptr, indices, inputs, score, n_threads, free, width)
        found = self._stream(rng, *args, guess=True)
        if found is None:  # the threshold guessed from the first chunk was too high (rare): the stream again
            rng.bit_generator.state = state
            found = self._stream(rng, *args, guess=False)
        n, b_rows, b_keys = found
        # the entries bucketed by row and sorted in their rows by key: the copies of a cell drawn twice are
        # neighbours
        r_indptr, perm = pt.bucket_rows(n_rows, b_rows[:n], np.arange(n, dtype=idx))
        del b_rows, found
        key = np.empty(n, np.int64)
        for start in range(0, n, 1 << 20):  # in blocks: take makes a copy of its indices as intp
            key[start:start + (1 << 20)] = b_keys.take(perm[start:start + (1 << 20)])
        del b_keys, perm
        r_indptr = r_indptr.astype(np.int64)
        pt.sort_rows(r_indptr, key, n_threads)
        words = key.view(np.uint32).reshape(-1, 2)
        cols, mag = words[:, 1 - self._LOW], words[:, self._LOW].view(np.float32)  # views of key
        # a cell drawn twice counts once: all its copies but the last (the largest) are dropped
        again = cols[1:] == cols[:-1]
        starts = r_indptr[1:-1]
        again[starts[(starts > 0) & (starts < n)] - 1] = False  # neighbours in two rows
        again = np.flatnonzero(again)
        del starts
        distinct = n - again.shape[0]
        if distinct > count:
            mag[again] = -np.inf  # in the low words of key: its columns stay
            keep, _ = _top(count, mag)
        else:
            keep = np.ones(n, bool)
            keep[again] = False
        del again, cols, mag, words
        c_indptr, key = pt.drop_entries(r_indptr, key, keep, n_threads)
        chosen = (c_indptr.astype(idx), key.view(np.uint32)[1 - self._LOW::2].astype(idx))
        del r_indptr, keep, c_indptr, key
        if distinct < count:  # rare: fill with uniform free positions
            extra = _free_positions(rng, n_rows, n_cols, count - distinct,
                                    *pt.merge_patterns((indptr, indices), chosen, n_threads), inputs, n_threads)
            chosen = pt.merge_patterns(chosen, extra, n_threads)
        return chosen

    def _stream(self, rng, n_rows, n_cols, count, indptr, indices, inputs, score, n_threads, free, width, *, guess):
        """The candidates' stream: ``(n, rows, keys)``, a buffer whose first ``n`` entries are free candidates,
        the largest ``|score|`` of all (a few more than ``count``); or None where the threshold guessed from the
        first chunk (``guess``) let fewer pass. ``free`` of the ``n_rows x width`` cells are free."""
        idx, chunk = indices.dtype, int(self.CHUNK)
        total = self.candidates * count
        # a few more than count are kept, so that cells drawn twice (counted once at the end) rarely leave
        # fewer than count: 1 %, and twice the share of the candidates that repeat a cell, about
        # total / free (drawn with repeats); a cut keeps them (and up to ``most`` when its threshold comes
        # from a sample), the rest of the buffer takes what the next chunks add above the threshold
        room = count + max(64, count // 100) + int(2 * count * total / free)
        most = room + room // 32 + 64
        cap = most + max(chunk, room // 4)
        n_chunks = -(-total // chunk)
        # the stream visits the rows in the order j, j + n_chunks, j + 2 n_chunks, ... for j = 0, 1, ...: a
        # chunk's rows are spread over the layer (the threads of the SDDMM share them), a row is in one or two
        order = np.concatenate([np.arange(j, n_rows, n_chunks) for j in range(min(n_chunks, n_rows))])
        offsets = np.zeros(n_rows + 1, np.int64)  # the candidates of row order[p]: offsets[p]:offsets[p + 1]
        np.cumsum(pt.random_row_counts(rng, n_rows, total)[order], out=offsets[1:])
        pool = None if inputs is None else np.asarray(inputs, dtype=idx)
        # the buffer: rows, and int64 keys column << 32 | the bits of |score| as float32 (which sort as the
        # non-negative floats they are), written and read through views of their words
        buf = [np.empty(cap, idx), np.empty(cap, np.int64)]
        words = buf[1].view(np.uint32).reshape(cap, 2)
        b_cols, b_mag = words[:, 1 - self._LOW], words[:, self._LOW].view(np.float32)
        n, threshold, guessed = 0, -np.inf, False
        for lo in range(0, total, chunk):
            hi = min(lo + chunk, total)
            # the chunk: candidates lo:hi of the stream, in the rows order[p0:p1], as a CSR pattern
            p0 = int(np.searchsorted(offsets, lo, side="right")) - 1
            p1 = int(np.searchsorted(offsets, hi, side="left"))
            rows = order[p0:p1]
            sizes = np.minimum(offsets[p0 + 1:p1 + 1], hi) - np.maximum(offsets[p0:p1], lo)
            by_row = np.argsort(rows)
            rows, sizes = rows[by_row].astype(idx), sizes[by_row]
            c_indptr = np.zeros(n_rows + 1, idx)
            c_indptr[rows + 1] = sizes
            np.cumsum(c_indptr, out=c_indptr, dtype=idx)
            if pool is None:
                c_cols = rng.integers(0, n_cols, size=hi - lo, dtype=idx)
            else:
                c_cols = pool[rng.integers(0, pool.shape[0], size=hi - lo, dtype=idx)]
            mag = np.abs(np.asarray(score(c_indptr, c_cols))).astype(np.float32, copy=False)
            del c_indptr
            if lo == 0 and guess and hi >= 1 << 16:
                # a guess: the value that a little more of the first chunk than the share needed exceeds
                # (the chunks' rows are spread alike over the layer); checked at the end
                share = room / total / (free / (n_rows * width))
                k = int(math.ceil((1.05 * share + 6 * math.sqrt(share / hi)) * hi))
                if k < hi // 2:
                    value = np.partition(mag, hi - k)[hi - k]
                    if np.count_nonzero(mag > value) >= 1.03 * share * hi:  # not where many tie (at 0, say)
                        threshold, guessed = value, True
            # only the candidates above the running threshold are located and checked against the pattern
            cand = np.flatnonzero(mag > threshold)
            starts = np.zeros(rows.shape[0] + 1, np.int64)
            np.cumsum(sizes, out=starts[1:])
            new = [np.repeat(rows, np.diff(np.searchsorted(cand, starts))), c_cols.take(cand), mag.take(cand)]
            del c_cols, mag, cand, rows, sizes, starts
            stored = pt.contains((indptr, indices), new[0], new[1], n_threads)
            if stored.any():
                new = [a[~stored] for a in new]
            del stored
            if n + new[0].shape[0] > cap:  # full: cut back to the top, then the chunk's above the new threshold
                n, cut = self._cut(room, most, n, buf, b_mag)
                threshold = max(threshold, cut)
                above = np.flatnonzero(new[2] > threshold)
                new = [a.take(above) for a in new]
                del above
            m = n + new[0].shape[0]
            buf[0][n:m], b_cols[n:m], b_mag[n:m] = new
            n = m
            del new
            if threshold == -np.inf and n >= room:  # the first threshold, as soon as there is one
                n, threshold = self._cut(room, most, n, buf, b_mag)
        if guessed and n < room:
            return None  # all the candidates above the guess should have been among the room largest
        if n > most:
            n, _ = self._cut(room, most, n, buf, b_mag)
        return n, buf[0], buf[1]

    @staticmethod
    def _cut(room, most, n, buf, mag):
        """Keep at least the ``room`` largest magnitudes ``mag`` of the ``n`` entries of the buffers, at most
        ``most`` (in their order, in front); returns how many and the threshold, the smallest of them."""
        mag = mag[:n]
        keep = None
        if n >= 1 << 19:  # a threshold from every step-th: if as many as room and at most most are above it,
            step = n >> 17  # they are kept, without a partition of all
            sample = mag[::step].copy()
            k = room * sample.shape[0] / n
            k = int(k + 3 * math.sqrt(k) + 8)  # a few standard deviations more: about room + room / 200 above
            if k < sample.shape[0]:
                threshold = np.partition(sample, sample.shape[0] - k)[sample.shape[0] - k]
                keep = mag >= threshold
                if not room <= np.count_nonzero(keep) <= most:
                    keep = None
        if keep is None:
            keep, threshold = _top(room, mag)
        # compacted block by block (a block is read before its kept entries are written, at or before it)
        block, kept = 1 << 20, 0
        for start in range(0, n, block):
            part = keep[start:start + block]
            for b in buf:
                values = np.compress(part, b[start:start + block])
                b[kept:kept + values.shape[0]] = values
            kept += values.shape[0]
        return kept, threshold

    def __repr__(self):
        return f"GradientGrowth(candidates={self.candidates})"


def _top(count, mag):
    """Mask of the ``count`` largest of ``mag`` (ties: the first ones) and the smallest of them (with
    fewer than ``count``: all, and -inf)."""
    n = mag.shape[0]
    if n < count:
        return np.ones(n, bool), -np.inf
    cut = n - count
    value = np.partition(mag, cut)[cut]
    keep = mag > value
    ties = np.flatnonzero(mag == value)[:count - int(np.count_nonzero(keep))]
    keep[ties] = True
    return keep, value


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


# ------------------------------------------------------------------------------------------------------
# gradual density change
def density_at(final_fraction, step, n_steps):
    """Fraction of a layer's starting connections left after update ``step`` of ``n_steps`` (GraNet).

    The cubic schedule of gradual magnitude pruning (Zhu and Gupta, 2017), which GraNet prunes with:
    ``final + (1 - final) * (1 - step / n_steps) ** 3``, from 1 before the first update to
    ``final_fraction`` after the last; the density falls fast while the network is plastic and slowly at
    the end.

    Examples
    --------
    >>> from set_cy.evolution import density_at
    >>> [round(density_at(0.5, step, 4), 3) for step in range(5)]
    [1.0, 0.711, 0.562, 0.508, 0.5]
    """
    frac = min(1.0, max(0.0, step / max(1, n_steps)))
    return float(final_fraction + (1.0 - final_fraction) * (1.0 - frac) ** 3)


def shrink_at(final_fraction, step, n_steps):
    """Fraction of the connections present before update ``step`` (1-based) that it removes without
    regrowth, so that the density follows :func:`density_at`: ``1 - density(step) / density(step - 1)``."""
    if final_fraction >= 1.0 or step > n_steps:
        return 0.0
    return float(1.0 - density_at(final_fraction, step, n_steps) / density_at(final_fraction, step - 1, n_steps))
