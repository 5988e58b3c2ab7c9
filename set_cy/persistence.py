"""The model file: one ``.npz`` archive, written atomically, read without pickle and checked.

Layout (format version 1): ``format_version``; ``config``, ``rng_state`` and ``extra_state`` as JSON
strings; per layer ``i`` the arrays ``layer{i}_indptr``, ``layer{i}_indices``, ``layer{i}_data``,
``layer{i}_velocity``, ``layer{i}_bias`` and ``layer{i}_bias_velocity``; optionally ``input_mask``
and ``extra_<name>`` arrays (training progress of subclasses).

:func:`write_network_file` writes next to the target under a temporary name, flushes it to disk and
renames it over the target, so a save killed part-way leaves the previous file intact.
:func:`read_network_file` checks the file's own structure (format version, JSON, the keys each layer
needs, the configuration's layer sizes) and turns every failure into ``ValueError``; the arrays it
returns are checked where they become a network, by :class:`set_cy.layers.SparseLayer` (see
:meth:`set_cy.SparseNetwork.load`), so nothing from a file reaches a kernel unchecked.
"""
import json
import logging
import os
import tempfile
import zipfile
import zlib

import numpy as np

from ._validation import LAYER_ARRAYS

__all__ = ["FORMAT_VERSION", "write_network_file", "read_network_file", "atomic_write"]

logger = logging.getLogger("set_cy")

FORMAT_VERSION = 1
TMP_PREFIX = ".set_cy-"


def atomic_write(path, write):
    """Call ``write(fh)`` on a temporary file beside ``path``, flush it to disk, rename it to ``path``.

    On any error (or interruption) the temporary file is removed and ``path`` is untouched; a
    process killed outright leaves at most a ``.set_cy-*.tmp`` file beside it, never a partial ``path``.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable (POSIX); not possible everywhere
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return path
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)
    return path


def write_network_file(path, config, rng_state, extra_state, layers, input_mask=None, extra_arrays=None):
    """Write a network to ``path`` atomically (see :func:`atomic_write`).

    Parameters
    ----------
    path : str or os.PathLike
    config, rng_state, extra_state : dict
        JSON-serialisable.
    layers : list of dict
        Per layer, the arrays of :data:`set_cy._validation.LAYER_ARRAYS` by name.
    input_mask : ndarray of bool, optional
    extra_arrays : dict of str to ndarray, optional
    """
    arrays = {
        "format_version": np.array(FORMAT_VERSION),
        "config": np.array(json.dumps(config)),
        "rng_state": np.array(json.dumps(rng_state)),
        "extra_state": np.array(json.dumps(extra_state)),
    }
    for i, layer in enumerate(layers):
        for name in LAYER_ARRAYS:
            arrays[f"layer{i}_{name}"] = layer[name]
    if input_mask is not None:
        arrays["input_mask"] = input_mask
    for k, v in (extra_arrays or {}).items():
        arrays[f"extra_{k}"] = v
    return atomic_write(path, lambda fh: np.savez(fh, **arrays))


def read_network_file(path):
    """Read a file written by :func:`write_network_file`; ``ValueError`` for anything else.

    Returns
    -------
    dict
        ``config`` (dict with ``layer_sizes``: a list of >= 2 positive ints), ``layers`` (list of
        dicts of arrays, one per layer, not yet checked), ``input_mask`` (ndarray or None),
        ``rng_state`` and ``extra_state`` (dicts) and ``extra_arrays`` (dict of ndarray).
    """
    try:
        with np.load(os.fspath(path), allow_pickle=False) as f:
            return _read(f, path)
    except json.JSONDecodeError as exc:  # a ValueError without the file's name
        raise ValueError(f"{path} is not a valid set_cy model file: {type(exc).__name__}: {exc}") from exc
    except ValueError:
        raise
    except (OSError, EOFError, KeyError, TypeError, zipfile.BadZipFile, zlib.error) as exc:
        raise ValueError(f"{path} is not a valid set_cy model file: {type(exc).__name__}: {exc}") from exc


def _json_object(f, key, path):
    value = json.loads(str(f[key]))
    if not isinstance(value, dict):
        raise ValueError(f"{path}: {key} is not a JSON object")
    return value


def _read(f, path):
    if not isinstance(f, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} is not an .npz archive")
    for key in ("format_version", "config", "rng_state", "extra_state"):
        if key not in f:
            raise ValueError(f"{path} is not a set_cy model file (no {key!r})")
    version = f["format_version"]
    if version.shape != () or not np.issubdtype(version.dtype, np.integer) or int(version) != FORMAT_VERSION:
        raise ValueError(f"{path} has format version {version!r}, this set_cy reads {FORMAT_VERSION}")
    config = _json_object(f, "config", path)
    sizes = config.get("layer_sizes")
    if (not isinstance(sizes, list) or len(sizes) < 2
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in sizes)):
        raise ValueError(f"{path}: layer_sizes must be a list of >= 2 positive ints, got {sizes!r}")
    layers = []
    for i in range(len(sizes) - 1):
        keys = {name: f"layer{i}_{name}" for name in LAYER_ARRAYS}
        missing = [k for k in keys.values() if k not in f]
        if missing:
            raise ValueError(f"{path}: missing arrays {missing}")
        layers.append({name: f[key] for name, key in keys.items()})
    known = {f"layer{i}_{name}" for i in range(len(sizes) - 1) for name in LAYER_ARRAYS}
    unknown = [k for k in f.files if k not in known and k not in ("format_version", "config", "rng_state",
                                                                    "extra_state", "input_mask")
               and not k.startswith("extra_")]
    if unknown:
        raise ValueError(f"{path}: unknown arrays {unknown[:5]} (a file of another network or program?)")
    return {"config": config, "layers": layers,
            "input_mask": f["input_mask"] if "input_mask" in f else None,
            "rng_state": _json_object(f, "rng_state", path), "extra_state": _json_object(f, "extra_state", path),
            "extra_arrays": {k[len("extra_"):]: f[k] for k in f.files if k.startswith("extra_")}}
