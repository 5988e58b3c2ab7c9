"""set_cy: truly sparse neural networks trained with Sparse Evolutionary Training on CPUs."""
import logging
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

from . import ops
from ._kernels import isa_dispatch_enabled, max_threads, openmp_enabled
from .linear import SparseLinear
from .model import SparseNetwork
from .trainer import Callback, History, SparseMLP

try:
    __version__ = _version("set_cy")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without metadata
    __version__ = "0+unknown"

logging.getLogger("set_cy").addHandler(logging.NullHandler())

__all__ = ["__version__", "ops", "SparseLinear", "SparseMLP", "SparseNetwork", "Callback", "History", "openmp_enabled",
           "isa_dispatch_enabled", "max_threads"]

# SETClassifier and SETRegressor need scikit-learn (an optional dependency): set_cy.estimator is
# imported on first use.
from importlib.util import find_spec as _find_spec  # noqa: E402

if _find_spec("sklearn") is not None:  # `from set_cy import *` keeps working without scikit-learn
    __all__ += ["SETClassifier", "SETRegressor"]


def __getattr__(name):
    if name in ("SETClassifier", "SETRegressor"):
        try:
            from . import estimator
        except ImportError as exc:
            if not (exc.name or "").startswith("sklearn"):
                raise
            raise ImportError(f"set_cy.{name} needs scikit-learn: pip install set_cy[sklearn]") from exc
        return getattr(estimator, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
