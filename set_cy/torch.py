"""Optional PyTorch bridge: truly sparse linear layers inside torch models (CPU tensors).

Needs torch (``pip install 'set_cy[torch]'``); ``import set_cy`` does not import this module, import it
explicitly: ``from set_cy.torch import SparseLinear``.

- :class:`SparseLinearFunction`: a ``torch.autograd.Function`` over the compiled kernels,
  ``Y = X @ W + bias`` with the gradient of ``X`` (``dY @ W^T``), of the stored values (SDDMM: ``X^T dY``
  at the stored connections) and of the bias (``dY.sum(0)``); :func:`sparse_linear` applies it.
- :class:`SparseLinear`: an ``nn.Module`` holding the values (and the bias) as ``nn.Parameter`` and the
  pattern as integer buffers (all in its ``state_dict``), with :meth:`SparseLinear.evolve`
  (one SET step, which can carry the state of a torch optimizer over) and
  ``from_scipy``/``to_scipy``.

The values are in the storage order of :class:`set_cy.SparseLinear` (the CSR of ``W^T``: by output
neuron, then input neuron). Tensors cross to the kernels without copies where the layout allows it
(``Tensor.numpy()`` shares memory); the only copies are the feature-major transposes of a row-major
input and output gradient. Outputs and input gradients are returned as transposed views of
feature-major buffers: ``Y.t()`` is contiguous, so a following sparse layer (through elementwise
activations, which keep strides) reads its input without a copy. Call ``.contiguous()`` where a
row-major tensor is needed (e.g. before ``.view``).
"""
import logging
import weakref
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from . import _kernels
from ._validation import MAX_THREADS, check_float_dtype, check_int, check_pattern, check_transpose, resolve_n_threads
from .evolution import check_evolution_args, make_drop_rule, make_grow_rule, needs_gradient
from .layers import SparseLayer
from .linear import SparseLinear as _NumpySparseLinear

__all__ = ["SparseLinear", "SparseLinearFunction", "SparsePattern", "sparse_linear"]

logger = logging.getLogger("set_cy")

_FLOAT_DTYPES = (torch.float32, torch.float64)
_INDEX_DTYPES = (torch.int32, torch.int64)
_TORCH_TO_NUMPY = {torch.float32: np.float32, torch.float64: np.float64}


class SparsePattern(NamedTuple):
    """The connection pattern of a layer ``W`` (``n_in x n_out``), as integer CPU tensors.

    ``indptr`` (``n_out + 1``) and ``indices`` (``nnz``) are the CSR pattern of ``W^T`` (storage
    order); ``t_indptr`` (``n_in + 1``), ``t_indices`` and ``perm`` the CSR pattern of ``W`` with
    ``perm[q]`` the storage position of its entry ``q`` (see :func:`set_cy.ops.transpose_pattern`).
    All five have the same dtype (int32 or int64).
    """

    n_in: int
    n_out: int
    indptr: torch.Tensor
    indices: torch.Tensor
    t_indptr: torch.Tensor
    t_indices: torch.Tensor
    perm: torch.Tensor


def _np(t):
    """Zero-copy NumPy view of a CPU tensor (``detach`` drops autograd; memory is shared)."""
    return t.detach().numpy()


def _feature_major(t):
    """``t.t()`` as a C-contiguous NumPy array (no copy when ``t`` is a transposed contiguous buffer)."""
    ft = t.detach().t()
    if not ft.is_contiguous():
        ft = ft.contiguous()
    return ft.numpy()


def _plain_tensor(t, dtype, ndim):
    """Whether ``t`` is a dense CPU tensor of ``dtype`` and ``ndim`` dimensions (the per-call fast path;
    :func:`_check_tensor` says what is wrong when it is not)."""
    return (isinstance(t, torch.Tensor) and t.dtype == dtype and t.dim() == ndim and t.is_cpu
            and t.layout == torch.strided)


def _check_tensor(t, name, dtype=None, ndim=None):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.device.type != "cpu":
        raise ValueError(f"{name} is on {t.device}: set_cy's kernels run on the CPU; move it with .cpu()")
    if t.layout != torch.strided:
        raise TypeError(f"{name} must be a dense (strided) tensor, got layout {t.layout}")
    if dtype is not None and t.dtype != dtype:
        raise TypeError(f"{name} has dtype {t.dtype} but {dtype} was expected (dtypes must not be mixed)")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(t.shape)}")


_PATTERN_FIELDS = ("indptr", "indices", "t_indptr", "t_indices", "perm")
# Patterns whose content was checked: id(indptr) -> (weak references to the five tensors, (n_in, n_out, their
# version counters), NumPy views of them). A pattern is checked again when any tensor is another object or
# was changed in place.
_CHECKED = {}
_CHECKED_MAX = 1024


def _checked_entry(pattern):
    """The :data:`_CHECKED` entry of ``pattern``'s five tensors (these very objects), or None."""
    hit = _CHECKED.get(id(pattern.indptr))
    if hit is not None and all(ref() is t for ref, t in zip(hit[0], pattern[2:])):
        return hit
    return None


def _check_pattern(pattern, transposed=True):
    """Check a pattern (its content once per version of its tensors, what memory safety needs on every call).

    Returns NumPy views of its five tensors (``indptr, indices, t_indptr, t_indices, perm``). With
    ``transposed=False`` the per-call ranges are those of ``indptr`` and ``indices`` alone (all that a
    forward product reads; the backward checks the saved pattern's five before it reads them).

    The content (canonical CSR, indices in range, the transposed index matching, see
    :func:`set_cy._validation.check_pattern`) costs O(nnz), so it is remembered per tensor object and
    torch's version counter: a module's buffers are checked at the first forward and after every
    in-place change (``load_state_dict``, :meth:`SparseLinear.evolve`, ``copy_``). Writes through a
    NumPy view of a buffer (``tensor.numpy()``) or through ``tensor.data`` bypass torch's counter: they are
    caught by the checks run on every call (:func:`_checked_arrays`: dtypes, lengths and ranges, one compiled
    pass), not by the full check.
    """
    if not isinstance(pattern, SparsePattern):
        raise TypeError(f"pattern must be a SparsePattern, got {type(pattern).__name__}")
    tensors = pattern[2:]
    hit = _checked_entry(pattern)
    if hit is not None and hit[1] == (pattern.n_in, pattern.n_out, tuple(t._version for t in tensors)):
        arrays = _checked_arrays(pattern, transposed, hit[2])
        if arrays is not None:
            return arrays
    for name in ("n_in", "n_out"):
        check_int(getattr(pattern, name), f"pattern.{name}", min_val=1)
    idx_dtype = pattern.indices.dtype
    if idx_dtype not in _INDEX_DTYPES:
        raise TypeError(f"pattern indices must be int32 or int64, got {idx_dtype}")
    for name, t in zip(_PATTERN_FIELDS, tensors):
        _check_tensor(t, f"pattern.{name}", dtype=idx_dtype, ndim=1)
        if not t.is_contiguous():
            raise ValueError(f"pattern.{name} must be contiguous")
    nnz = pattern.indices.shape[0]
    if (pattern.indptr.shape[0] != pattern.n_out + 1 or pattern.t_indptr.shape[0] != pattern.n_in + 1
            or pattern.t_indices.shape[0] != nnz or pattern.perm.shape[0] != nnz):
        raise ValueError(f"inconsistent pattern: indptr {pattern.indptr.shape[0]} (expected n_out + 1 = "
                         f"{pattern.n_out + 1}), t_indptr {pattern.t_indptr.shape[0]} (expected n_in + 1 = "
                         f"{pattern.n_in + 1}), indices/t_indices/perm {nnz}/{pattern.t_indices.shape[0]}/"
                         f"{pattern.perm.shape[0]}")
    stamp = (int(pattern.n_in), int(pattern.n_out), tuple(t._version for t in tensors))
    arrays = [_np(t) for t in tensors]
    check_pattern(arrays[0], arrays[1], pattern.n_out, pattern.n_in, "pattern")
    check_transpose(*arrays[:2], pattern.n_in, *arrays[2:], name="pattern")
    if len(_CHECKED) >= _CHECKED_MAX:
        _CHECKED.clear()
    views = (arrays, tuple(t.data_ptr() for t in tensors), tuple(int(t.shape[0]) for t in tensors))
    _CHECKED[id(pattern.indptr)] = (tuple(weakref.ref(t) for t in tensors), stamp, views)
    return arrays


def _check_arguments(X, values, bias, pattern):
    """Check the arguments of :class:`SparseLinearFunction`; return ``bias`` made contiguous and the pattern's
    arrays (see :func:`_check_pattern`)."""
    arrays = _check_pattern(pattern, transposed=False)  # the forward product reads indptr and indices
    dtype = values.dtype if isinstance(values, torch.Tensor) else None
    if (dtype in _FLOAT_DTYPES and _plain_tensor(values, dtype, 1) and values.is_contiguous()
            and values.shape[0] == pattern.indices.shape[0] and _plain_tensor(X, dtype, 2)
            and X.shape[1] == pattern.n_in and (bias is None or (_plain_tensor(bias, dtype, 1)
                                                 and bias.shape[0] == pattern.n_out and bias.is_contiguous()))):
        return bias, arrays  # the usual case, in one expression; otherwise the checks below say what is wrong
    _check_tensor(values, "values", ndim=1)
    if values.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"values must be float32 or float64, got {values.dtype}")
    if values.shape[0] != pattern.indices.shape[0]:
        raise ValueError(f"values has {values.shape[0]} entries but the pattern has {pattern.indices.shape[0]}")
    if not values.is_contiguous():
        raise ValueError("values must be contiguous")
    _check_tensor(X, "X", dtype=values.dtype, ndim=2)
    if X.shape[1] != pattern.n_in:
        raise ValueError(f"X must have shape (batch, {pattern.n_in}), got {tuple(X.shape)}")
    if bias is not None:
        _check_tensor(bias, "bias", dtype=values.dtype, ndim=1)
        if bias.shape[0] != pattern.n_out:
            raise ValueError(f"bias must have shape ({pattern.n_out},), got {tuple(bias.shape)}")
        bias = bias if bias.is_contiguous() else bias.contiguous()
    return bias, arrays


def _checked_arrays(pattern, transposed=True, views=None):
    """What memory safety needs, for a pattern whose content was checked before (one compiled pass, O(nnz + n)).

    Returns NumPy views of the five tensors when they are still CPU tensors of one index dtype, 1-D and
    contiguous, with the lengths of an ``n_in x n_out`` pattern; None when they are not (the caller then
    runs the full check, which says what is wrong). Raises ValueError when an offset or index lies outside
    the range it indexes. Sortedness and the transposed index matching the pattern (needed for correct
    results, not for memory safety) are checked once per version. ``transposed=False``: the ranges of
    ``indptr`` and ``indices`` alone (see :func:`set_cy._kernels.pattern_outside`). ``views``: ``(arrays,
    addresses, lengths)`` made earlier from the same tensors, whose arrays are used again while every tensor
    still has that address and length (a tensor whose ``.data`` was replaced gets new views; the kernels
    only read the views, which keep their memory alive, and the ranges are checked on them).
    """
    tensors = pattern[2:]
    try:
        if views is not None and views[1] == tuple(t.data_ptr() for t in tensors) and \
                views[2] == tuple(t.shape[0] for t in tensors):
            arrays = views[0]
        else:
            arrays = [_np(t) for t in tensors]
        code = _kernels.pattern_outside(*arrays, pattern.n_in, pattern.n_out, transposed)
    except (TypeError, ValueError, RuntimeError, IndexError):  # replaced through .data: dtype, device, layout
        return None
    if code < 0:
        return None
    if code:
        nnz = pattern.indices.shape[0]
        hi = (nnz, pattern.n_in - 1, nnz, pattern.n_out - 1, nnz - 1)[code - 1]
        raise ValueError(f"pattern.{_PATTERN_FIELDS[code - 1]} has values outside [0, {hi}] (changed behind "
                         f"torch's back?)")
    return arrays


class SparseLinearFunction(torch.autograd.Function):
    """``Y = X @ W + bias`` over the kernels, ``W`` given by its values and a :class:`SparsePattern`.

    ``apply(X, values, bias, pattern, n_threads)``: ``X`` of shape (batch, n_in), ``values`` (nnz,),
    ``bias`` (n_out,) or None, all of one float dtype on the CPU, checked before a kernel sees them
    (the pattern's content once per version of its tensors, see :func:`_check_pattern`); ``n_threads``
    a positive int (:func:`sparse_linear` resolves None). Not twice differentiable (the backward is
    marked ``once_differentiable``).
    """

    @staticmethod
    def forward(ctx, X, values, bias, pattern, n_threads):
        """``X @ W + bias`` (batch, n_out), a transposed view of the kernel's feature-major result."""
        bias, (indptr, indices, *_) = _check_arguments(X, values, bias, pattern)
        if type(n_threads) is not int or not 0 < n_threads <= MAX_THREADS:
            n_threads = check_int(n_threads, "n_threads", min_val=1, max_val=MAX_THREADS)
        Xt = X.detach().t()
        view = Xt.is_contiguous()
        Xf = (Xt if view else Xt.contiguous()).numpy()
        v = _np(values)
        out = np.empty((pattern.n_out, Xf.shape[1]), dtype=v.dtype)
        _kernels.spmm(indptr, indices, v, None, Xf, out, None if bias is None else _np(bias), n_threads)
        # saved as a (batch, n_in) tensor whose transpose is Xf: X itself when Xf is a view of it (so
        # autograd sees in-place changes of X), else the feature-major copy
        ctx.save_for_backward(X if view else torch.from_numpy(Xf).t(), values)
        # the pattern's tensors are inputs that need no gradient: kept with their version counters (checked
        # in the backward as save_for_backward would) rather than saved and unpacked
        ctx.pattern, ctx.versions = pattern, tuple(t._version for t in pattern[2:])
        ctx.n_threads = n_threads
        ctx.has_bias = bias is not None
        return torch.from_numpy(out).t()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dY):
        """Gradients of ``X`` (``dY @ W.T``), ``values`` (the SDDMM at the stored connections) and ``bias``."""
        X, values = ctx.saved_tensors
        pattern = ctx.pattern
        if tuple(t._version for t in pattern[2:]) != ctx.versions:
            raise RuntimeError("the pattern needed for gradient computation has been modified by an inplace "
                               "operation since the forward (e.g. SparseLinear.evolve): run the forward again")
        # the version counters miss writes through .numpy() or .data since the forward: the ranges are checked
        hit = _checked_entry(pattern)
        arrays = _checked_arrays(pattern, True, None if hit is None else hit[2])
        if arrays is None:
            raise RuntimeError("the pattern saved for backward was replaced through .data since the forward")
        indptr, indices, t_indptr, t_indices, perm = arrays
        nt = ctx.n_threads
        dYf = _feature_major(dY)
        dX = g = gb = None
        if ctx.needs_input_grad[0]:
            dXf = np.empty((pattern.n_in, dYf.shape[1]), dtype=dYf.dtype)
            _kernels.spmm(t_indptr, t_indices, _np(values), perm, dYf, dXf, None, nt)
            dX = torch.from_numpy(dXf).t()
        want_g, want_gb = ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]
        if want_g or want_gb:  # one pass gives both (the values' gradient of an empty array costs nothing)
            gv = np.empty(values.shape[0] if want_g else 0, dtype=dYf.dtype)
            gbv = np.empty(dYf.shape[0], dtype=dYf.dtype) if want_gb else None
            _kernels.sddmm(indptr, indices, dYf, _feature_major(X), gv, nt, gbv)
            g = torch.from_numpy(gv) if want_g else None
            gb = torch.from_numpy(gbv) if want_gb else None
        return dX, g, gb, None, None


def sparse_linear(X, values, bias, pattern, *, n_threads=None):
    """``X @ W + bias`` for the sparse ``W`` given by ``values`` and ``pattern``, differentiable.

    Parameters
    ----------
    X : Tensor of shape (batch, n_in), float32 or float64, CPU
    values : Tensor of shape (nnz,), same dtype, in the storage order of ``pattern``
    bias : Tensor of shape (n_out,), same dtype, or None
    pattern : SparsePattern
    n_threads : int or None, default None
        OpenMP threads; None or -1 uses all cores, ``-k`` all but ``k - 1`` (joblib's meaning).

    Returns
    -------
    Tensor of shape (batch, n_out)
        A transposed view of a feature-major buffer (see the module docstring).
    """
    return SparseLinearFunction.apply(X, values, bias, pattern, resolve_n_threads(n_threads))


def _torch_dtype(dtype):
    if isinstance(dtype, torch.dtype):
        if dtype not in _FLOAT_DTYPES:
            raise TypeError(f"dtype must be float32 or float64, got {dtype}")
        return dtype
    return torch.float32 if check_float_dtype(dtype) == np.float32 else torch.float64


class SparseLinear(nn.Module):
    """Truly sparse ``nn.Linear``-like layer: ``Y = X @ W + bias`` with ``W`` (n_in x n_out) sparse.

    Parameters
    ----------
    n_in, n_out : int
    epsilon, nnz, init, seed, n_threads
        As in :class:`set_cy.SparseLinear` (``epsilon=20`` when neither is given); ``seed`` also
        seeds the generator of :meth:`evolve`.
    bias : bool, default True
    dtype : torch.float32, torch.float64 or the NumPy names, default torch.float32

    Attributes
    ----------
    values : nn.Parameter of shape (nnz,)
        Stored weights, by output neuron then input neuron (:meth:`coords` gives their ``(i, j)``).
    bias : nn.Parameter of shape (n_out,) or None
    indptr, indices, t_indptr, t_indices, perm : buffers
        The :class:`SparsePattern` (also in the ``state_dict``).

    Notes
    -----
    CPU only: moving the module to another device makes ``forward`` raise. ``module.double()`` /
    ``.float()`` convert the values and the bias; the pattern keeps its integer dtype.

    Examples
    --------
    >>> import torch
    >>> from set_cy.torch import SparseLinear
    >>> layer = SparseLinear(784, 300, epsilon=10, seed=0)
    >>> layer
    SparseLinear(n_in=784, n_out=300, nnz=10840, bias=True, dtype=torch.float32)
    >>> layer(torch.randn(8, 784)).shape
    torch.Size([8, 300])
    """

    def __init__(self, n_in, n_out, *, epsilon=None, nnz=None, bias=True, init="he_uniform", dtype=torch.float32,
                 seed=None, n_threads=None):
        super().__init__()
        tdtype = _torch_dtype(dtype)
        lin = _NumpySparseLinear(n_in, n_out, epsilon=epsilon, nnz=nnz, init=init, dtype=_TORCH_TO_NUMPY[tdtype],
                                 seed=seed, n_threads=n_threads)
        self._load(lin, bias)

    def _load(self, lin, bias):
        """Take the pattern, values and bias of a :class:`set_cy.SparseLinear` (copies)."""
        layer = lin.layer
        self.n_in, self.n_out = layer.n_in, layer.n_out
        self.init = layer.init
        self.n_threads = layer.n_threads
        self.rng = lin.rng
        self.values = nn.Parameter(torch.from_numpy(layer.data.copy()))
        if bias:
            self.bias = nn.Parameter(torch.from_numpy(layer.bias.copy()))
        else:
            self.register_parameter("bias", None)
        for name in ("indptr", "indices", "t_indptr", "t_indices", "perm"):
            self.register_buffer(name, torch.from_numpy(getattr(layer, name).copy()))

    @classmethod
    def from_scipy(cls, W, bias=None, *, init="he_uniform", seed=None, n_threads=None):
        """Module with the connections and values of ``W`` (see :meth:`set_cy.SparseLinear.from_scipy`).

        ``bias``: array-like or Tensor of shape (n_out,); ``None`` gives a zero bias, ``False`` none.
        The dtype follows ``W``.
        """
        no_bias = bias is False
        if isinstance(bias, torch.Tensor):
            bias = bias.detach().cpu().numpy()
        lin = _NumpySparseLinear.from_scipy(W, None if no_bias else bias, init=init, seed=seed, n_threads=n_threads)
        self = cls.__new__(cls)
        nn.Module.__init__(self)
        self._load(lin, not no_bias)
        return self

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        """``load_state_dict`` for this module: the incoming pattern is checked before it replaces the buffers.

        A pattern that is not a valid one of an ``n_in x n_out`` layer (out-of-range or unsorted
        indices, an ``indptr`` that decreases, a transposed index that does not match, mixed dtypes,
        ...) is reported the way torch reports state-dict errors (``RuntimeError`` from
        ``load_state_dict``) and nothing is loaded into this module.
        """
        incoming = {name: state_dict.get(prefix + name, getattr(self, name)) for name in _PATTERN_FIELDS}
        try:
            bad = [name for name, t in incoming.items() if not isinstance(t, torch.Tensor)]
            if bad:
                raise TypeError(f"{bad} must be tensors")
            # torch would copy the tensors whose shapes match and refuse the others: a half-loaded pattern
            shapes = []
            for name, current in {**self._parameters, **self._buffers}.items():
                t = state_dict.get(prefix + name)
                if current is not None and isinstance(t, torch.Tensor) and t.shape != current.shape:
                    shapes.append(f"{name} {tuple(t.shape)} (module: {tuple(current.shape)})")
            if shapes:
                raise ValueError("shapes differ from the module's: " + ", ".join(shapes))
            _check_pattern(SparsePattern(self.n_in, self.n_out, *(incoming[name] for name in _PATTERN_FIELDS)))
            values = state_dict.get(prefix + "values", self.values)
            if not isinstance(values, torch.Tensor) or values.shape != incoming["indices"].shape:
                raise ValueError(f"values must be a tensor of shape {tuple(incoming['indices'].shape)} (one per "
                                 f"connection of the pattern)")
        except (TypeError, ValueError) as exc:
            error_msgs.append(f"{type(self).__name__} at {prefix or '(root)'!r}: invalid pattern or values in "
                              f"the state dict: {exc}")
            return
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    @property
    def pattern(self):
        """The current :class:`SparsePattern` (views of the buffers)."""
        return SparsePattern(self.n_in, self.n_out, self.indptr, self.indices, self.t_indptr, self.t_indices,
                             self.perm)

    @property
    def nnz(self):
        return int(self.indices.shape[0])

    def coords(self):
        """``(rows, cols)``: input and output neuron of every stored value, as int64 tensors."""
        cols = torch.repeat_interleave(torch.arange(self.n_out), torch.diff(self.indptr.long()))
        return self.indices.long().clone(), cols

    def _layer(self):
        """A :class:`SparseLayer` over copies of the module's arrays (for export and evolution)."""
        for name, t in (("values", self.values), ("indices", self.indices)):
            _check_tensor(t, name)
        layer = SparseLayer(self.n_in, self.n_out, _np(self.indptr).copy(), _np(self.indices).copy(),
                            _np(self.values).copy(), bias=None if self.bias is None else _np(self.bias).copy(),
                            init=self.init, n_threads=self.n_threads)
        return layer

    def to_scipy(self):
        """The weights as a ``scipy.sparse.csr_array`` of shape ``(n_in, n_out)`` (a copy)."""
        return self._layer().to_scipy()

    def forward(self, X):
        """``X @ W + bias`` for ``X`` of shape (batch, n_in) (see :func:`sparse_linear`)."""
        b = self._buffers  # (the pattern property, without five nn.Module attribute look-ups)
        pattern = SparsePattern(self.n_in, self.n_out, b["indptr"], b["indices"], b["t_indptr"], b["t_indices"],
                                b["perm"])
        return SparseLinearFunction.apply(X, self.values, self.bias, pattern, resolve_n_threads(self.n_threads))

    def extra_repr(self):
        return (f"n_in={self.n_in}, n_out={self.n_out}, nnz={self.nnz}, bias={self.bias is not None}, "
                f"dtype={self.values.dtype}")

    @torch.no_grad()
    def evolve(self, zeta, *, optimizer=None, criterion="signed", new_weights="init", rng=None, grow="random",
               grow_candidates=10, X=None, dY=None):
        """One evolution step: replace the fraction ``zeta`` of the connections by as many new ones.

        Same rule as :meth:`set_cy.SparseLinear.evolve`. The pattern buffers and ``values`` are
        rewritten in place (same tensors, same ``nnz``), so an optimizer keeps referring to the right
        parameter, but any per-value state it holds would be misaligned: pass it as ``optimizer`` and
        every state tensor it keeps for ``values`` with the shape of ``values`` (SGD's
        ``momentum_buffer``, Adam's ``exp_avg``/``exp_avg_sq``, ...) is carried over: surviving
        connections keep theirs, new ones get zero. Without ``optimizer``, reset its state yourself
        (e.g. ``optimizer.state.pop(layer.values, None)``). ``values.grad`` is cleared, and a pending
        autograd graph through this layer can no longer be backpropagated (its saved pattern was
        modified).

        Parameters
        ----------
        zeta : float in [0, 1]
        optimizer : torch.optim.Optimizer, optional
        criterion : str or drop rule, default "signed"
            What is removed (:data:`set_cy.evolution.CRITERIA` or a :class:`set_cy.evolution.DropRule`).
        new_weights : {"init", "zeros"}, default "init"
        rng : numpy.random.Generator, optional
            Default: the module's generator.
        grow : str or grow rule, default "random"
            Where new connections grow (:data:`set_cy.evolution.GROW_RULES` or a
            :class:`set_cy.evolution.GrowRule`). ``"gradient"`` needs a batch's input ``X``
            (batch, n_in) and the gradient of the loss with respect to this layer's output ``dY``
            (batch, n_out), e.g. from ``output.retain_grad()``.
        grow_candidates : int, default 10
            Sampled free positions per new connection for ``grow="gradient"``.
        X, dY : torch.Tensor, optional

        Returns
        -------
        int
            Number of connections replaced.
        """
        zeta = check_evolution_args(zeta, criterion, new_weights)
        grower = make_grow_rule(grow, grow_candidates)
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if rng is not None and not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        layer = self._layer()
        score = None
        if needs_gradient(grower, make_drop_rule(criterion)):
            if X is None or dY is None:
                raise ValueError(f"criterion={criterion!r}, grow={grow!r} need the gradient: pass X= (batch, n_in) "
                                 "and dY= (batch, n_out)")
            dtype = self.values.dtype
            _check_tensor(X, "X", dtype, 2)
            _check_tensor(dY, "dY", dtype, 2)
            if X.shape[1] != self.n_in or dY.shape[1] != self.n_out or X.shape[0] != dY.shape[0]:
                raise ValueError(f"X and dY must be (batch, {self.n_in}) and (batch, {self.n_out}), got "
                                 f"{tuple(X.shape)} and {tuple(dY.shape)}")
            score = layer.scorer(_feature_major(dY), _feature_major(X))
        old_indptr, old_indices = layer.indptr.copy(), layer.indices.copy()
        layer.velocity[:] = 1  # marks the survivors: evolve keeps their velocity, new connections get 0
        k = layer.evolve(zeta, self.rng if rng is None else rng, criterion=criterion, new_weights=new_weights,
                         grow=grower, score=score)
        self.values.copy_(torch.from_numpy(layer.data))
        for name in ("indptr", "indices", "t_indptr", "t_indices", "perm"):
            getattr(self, name).copy_(torch.from_numpy(getattr(layer, name)))
        self.values.grad = None
        state = optimizer.state.get(self.values) if optimizer is not None else None
        if state:
            survivors = layer.velocity != 0
            old_pos = np.searchsorted(self._keys(old_indptr, old_indices),
                                      self._keys(layer.indptr, layer.indices)[survivors])
            src = torch.from_numpy(old_pos)
            dst = torch.from_numpy(np.flatnonzero(survivors))
            for s in state.values():
                if isinstance(s, torch.Tensor) and s.shape == self.values.shape:
                    moved = torch.zeros_like(s)
                    moved[dst] = s[src]
                    s.copy_(moved)
        logger.debug("set_cy.torch.SparseLinear.evolve: replaced %d of %d connections", k, self.nnz)
        return k

    def _keys(self, indptr, indices):
        """Sorted int64 keys ``j * n_in + i`` of a storage-order pattern."""
        rows = np.repeat(np.arange(self.n_out, dtype=np.int64), np.diff(indptr))
        return rows * self.n_in + indices
