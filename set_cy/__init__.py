"""set_cy: truly sparse neural networks trained with Sparse Evolutionary Training on CPUs."""
import logging
from importlib.metadata import PackageNotFoundError, version as _version

from . import ops
from .model import SparseNetwork
from .trainer import Callback, History, SparseMLP
from ._kernels import isa_dispatch_enabled, max_threads, openmp_enabled

try:
    __version__ = _version("set_cy")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without metadata
    __version__ = "0+unknown"

logging.getLogger("set_cy").addHandler(logging.NullHandler())

__all__ = ["__version__", "ops", "SparseMLP", "SparseNetwork", "Callback", "History", "openmp_enabled", "isa_dispatch_enabled", "max_threads"]
