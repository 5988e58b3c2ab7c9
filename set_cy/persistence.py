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
import errno
import json
import logging
import math
import os
import stat
import struct
import tempfile
import zipfile
import zlib

import numpy as np

from ._validation import LAYER_ARRAYS
from .sizing import check_fits

__all__ = ["FORMAT_VERSION", "write_network_file", "read_network_file", "atomic_write"]

logger = logging.getLogger("set_cy")

#: Version of the model file's layout, stored in every file and checked on reading.
FORMAT_VERSION = 1
TMP_PREFIX = ".set_cy-"


def atomic_write(path, write):
    """Call ``write(fh)`` on a temporary file beside ``path``, flush it to disk, rename it to ``path``.

    On any error (or interruption) the temporary file is removed and ``path`` is untouched; a
    process killed outright leaves at most a ``.set_cy-*.tmp`` file beside it, never a partial ``path``.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(errno.ENOENT, f"cannot write {path}: the directory {directory} does not exist", path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=".tmp", dir=directory)
    except OSError as exc:  # e.g. no permission: name the user's path, not the temporary one
        raise type(exc)(exc.errno, f"cannot write {path}: {exc.strerror}", path) from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno is not None:  # e.g. a full disk, a target that is a directory
            raise type(exc)(exc.errno, f"cannot write {path}: {exc.strerror}", path) from exc
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

    The archive is read member by member, never trusting a size it states: every npy header (dtype,
    shape, byte order, no object or structured dtype) is checked against the configuration, and the
    total it declares against the available memory (:func:`set_cy.sizing.check_fits`), before any
    array is decompressed; a member whose stream inflates past its declared size, or ends early, is
    refused. Special files (``/dev/zero``, FIFOs) are refused before they are opened.

    Returns
    -------
    dict
        ``config`` (dict with ``layer_sizes``: a list of >= 2 positive ints), ``layers`` (list of
        dicts of arrays, one per layer, not yet checked), ``input_mask`` (ndarray or None),
        ``rng_state`` and ``extra_state`` (dicts) and ``extra_arrays`` (dict of ndarray).

    Raises
    ------
    ValueError
        Naming the file, the member and what is wrong with it (a missing file raises
        ``FileNotFoundError``'s message inside a ``ValueError`` too).
    """
    name = os.fspath(path)
    try:
        mode = os.stat(name).st_mode
    except OSError as exc:
        raise ValueError(f"{name} is not a valid set_cy model file: {type(exc).__name__}: {exc}") from exc
    if not stat.S_ISREG(mode):
        raise ValueError(f"{name} is not a regular file ({_file_kind(mode)}), so not a set_cy model file")
    try:
        with open(name, "rb") as fh, zipfile.ZipFile(fh) as zf:
            return _read(_Archive(fh, zf, name))
    except _StreamError as exc:  # a plain ValueError for the caller; the message names file and member
        raise ValueError(str(exc)) from None
    except json.JSONDecodeError as exc:  # a ValueError without the file's name
        raise ValueError(f"{name} is not a valid set_cy model file: {type(exc).__name__}: {exc}") from exc
    except ValueError:
        raise
    except (OSError, EOFError, KeyError, TypeError, zipfile.BadZipFile, zlib.error) as exc:
        raise ValueError(f"{name} is not a valid set_cy model file: {type(exc).__name__}: {exc}") from exc


def _file_kind(mode):
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "not a regular file"


class _StreamError(ValueError):
    """A member's stream is not what the archive states (raised with the file and member named)."""


class _MemberStream:
    """The decompressed bytes of one zip member, read from its raw stream with a bounded inflater.

    Never gives, nor inflates, more than the size the zip directory states for the member
    (``ValueError`` past it), and :meth:`finish` checks that the stream ended there with the
    stated CRC. ``read`` is what the npy header readers of :mod:`numpy.lib.format` need.
    """

    CHUNK = 1 << 20

    def __init__(self, fh, info, label):
        self.label = label
        if info.flag_bits & 0x1:
            raise _StreamError(f"{label} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise _StreamError(f"{label} uses zip compression method {info.compress_type}; "
                             f"set_cy reads stored and deflated members")
        if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
            raise _StreamError(f"{label} is stored with {info.compress_size} bytes but states {info.file_size}")
        fh.seek(info.header_offset)
        local = fh.read(_LOCAL_HEADER.size)
        if len(local) != _LOCAL_HEADER.size or local[:4] != b"PK\x03\x04":
            raise _StreamError(f"{label} has no local zip header where the directory points")
        name_len, extra_len = _LOCAL_HEADER.unpack(local)[-2:]
        self._fh, self._info = fh, info
        self._raw_pos = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
        self._raw_left = info.compress_size
        self._left = info.file_size  # bytes the member may still give
        self._inflater = zlib.decompressobj(-zlib.MAX_WBITS) if info.compress_type == zipfile.ZIP_DEFLATED else None
        self._pending = b""
        self._crc = 0
        self.consumed = 0  # bytes given by read/readinto so far

    def _raw(self):
        if self._raw_left == 0:
            return b""
        self._fh.seek(self._raw_pos)
        raw = self._fh.read(min(self.CHUNK, self._raw_left))
        if not raw:
            raise _StreamError(f"{self.label}: the file ends inside the member")
        self._raw_pos += len(raw)
        self._raw_left -= len(raw)
        return raw

    def _more(self):
        """The next decompressed piece (b"" at the end of the member's stream)."""
        while True:
            if self._inflater is None:
                out = self._raw()
                done = not out
            else:
                src = self._inflater.unconsumed_tail or self._raw()
                if not src:
                    if not self._inflater.eof:
                        raise _StreamError(f"{self.label}: its compressed stream ends early")
                    return b""
                out = self._inflater.decompress(src, self.CHUNK)
                done = False
            if len(out) > self._left:
                raise _StreamError(f"{self.label} inflates past its declared size of {self._info.file_size} bytes")
            self._left -= len(out)
            self._crc = zlib.crc32(out, self._crc)
            if out or done:
                return out

    def read(self, n):
        parts, have = [self._pending], len(self._pending)
        while have < n:
            piece = self._more()
            if not piece:
                break
            parts.append(piece)
            have += len(piece)
        data = b"".join(parts)
        out, self._pending = data[:n], data[n:]
        self.consumed += len(out)
        return out

    def readinto(self, buf):
        """Fill the byte buffer ``buf`` exactly (``ValueError`` if the member ends first)."""
        view = memoryview(buf).cast("B")
        pos = 0
        while pos < len(view):
            if self._inflater is None and not self._pending:  # stored: straight from the file into the buffer
                want = min(len(view) - pos, self._raw_left, self.CHUNK * 64)
                self._fh.seek(self._raw_pos)
                got = self._fh.readinto(view[pos:pos + want]) if want else 0
                if not got:
                    raise _StreamError(f"{self.label} ends {len(view) - pos} bytes before its declared data")
                self._raw_pos += got
                self._raw_left -= got
                self._left -= got
                self._crc = zlib.crc32(view[pos:pos + got], self._crc)
                pos += got
                continue
            piece = self._pending or self._more()
            self._pending = b""
            if not piece:
                raise _StreamError(f"{self.label} ends {len(view) - pos} bytes before its declared data")
            take = min(len(piece), len(view) - pos)
            view[pos:pos + take] = memoryview(piece)[:take]
            self._pending = piece[take:]
            pos += take
        self.consumed += pos

    def finish(self):
        """Check that the member ends here, at its stated size and CRC."""
        if self._pending or self._more():
            raise _StreamError(f"{self.label} holds more bytes than its npy header declares")
        if self._left:
            raise _StreamError(f"{self.label} ends {self._left} bytes before its stated size")
        if (self._crc & 0xFFFFFFFF) != self._info.CRC:
            raise _StreamError(f"{self.label} fails its CRC check (a damaged file)")


_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # signature, versions, flags, method, time, date, crc, sizes, name, extra
_MAX_NPY_HEADER = 10000
_MAX_JSON_BYTES = 64 << 20  # config, rng_state, extra_state: a few kB in practice
_META_KEYS = ("format_version", "config", "rng_state", "extra_state")


class _Archive:
    """The members of an ``.npz`` archive, with their npy headers read but no array decompressed."""

    def __init__(self, fh, zf, path):
        self.fh, self.path = fh, path
        self.infos = {}
        for info in zf.infolist():
            if not info.filename.endswith(".npy") or info.is_dir():
                raise ValueError(f"{path}: member {info.filename!r} is not an .npy array")
            key = info.filename[:-4]
            if key in self.infos:
                raise ValueError(f"{path}: member {info.filename!r} appears twice")
            self.infos[key] = info
        self.headers = {}

    def __contains__(self, key):
        return key in self.infos

    @property
    def files(self):
        return list(self.infos)

    def label(self, key):
        return f"{self.path}: member {key}"

    def header(self, key):
        """``(shape, dtype, nbytes)`` from the member's npy header, checked for what set_cy reads."""
        if key not in self.headers:
            label = self.label(key)
            stream = _MemberStream(self.fh, self.infos[key], label)
            try:
                version = np.lib.format.read_magic(stream)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream, _MAX_NPY_HEADER)
                elif version == (2, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream, _MAX_NPY_HEADER)
                else:
                    raise ValueError(f"npy format version {version}, set_cy reads 1.0 and 2.0")
            except _StreamError:
                raise
            except ValueError as exc:
                raise ValueError(f"{label}: not a valid npy header: {exc}") from exc
            if dtype.hasobject:
                raise ValueError(f"{label} holds Python objects (pickled data), which a set_cy model file never "
                                 f"holds; refused without unpickling")
            if dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in "biufU":
                raise ValueError(f"{label} has dtype {dtype}; set_cy model files hold numbers, bools and strings")
            if fortran and len(shape) > 1:
                raise ValueError(f"{label} is a Fortran-ordered array of shape {shape}; set_cy writes 0-d and 1-D")
            nbytes = math.prod(shape) * dtype.itemsize
            if self.infos[key].file_size != stream.consumed + nbytes:
                raise ValueError(f"{label}: its npy header declares {nbytes} bytes of {dtype} {shape}, but the "
                                 f"member holds {self.infos[key].file_size - stream.consumed} bytes after the header")
            self.headers[key] = (shape, dtype, nbytes)
        return self.headers[key]

    def expect(self, key, *, ndim, kinds, length=None, max_length=None, what=""):
        """Check a member's header: ``ndim`` dimensions, a dtype kind in ``kinds``, its length."""
        shape, dtype, _ = self.header(key)
        label = self.label(key)
        if len(shape) != ndim:
            raise ValueError(f"{label} must be {'0-d' if ndim == 0 else f'{ndim}-D'}, got shape {shape}")
        if dtype.kind not in kinds:
            names = {"b": "bool", "i": "integer", "u": "unsigned integer", "f": "float", "U": "string"}
            raise ValueError(f"{label} has dtype {dtype}, expected {' or '.join(names[k] for k in kinds)}")
        if length is not None and shape[0] != length:
            raise ValueError(f"{label} has length {shape[0]}, expected {length}{what}")
        if max_length is not None and shape[0] > max_length:
            raise ValueError(f"{label} declares {shape[0]} entries, more than the {max_length}{what}")

    def read(self, key):
        """The member's array (native byte order), after the header checks."""
        shape, dtype, nbytes = self.header(key)
        stream = _MemberStream(self.fh, self.infos[key], self.label(key))
        stream.read(self.infos[key].file_size - nbytes)  # the npy header, checked by header()
        out = np.empty(shape, dtype)
        stream.readinto(out.reshape(-1).view(np.uint8))
        stream.finish()
        if not dtype.isnative:
            out = out.astype(dtype.newbyteorder("="))
        return out


def _json_object(archive, key):
    archive.expect(key, ndim=0, kinds="U")
    if archive.header(key)[2] > _MAX_JSON_BYTES:
        raise ValueError(f"{archive.label(key)} declares {archive.header(key)[2]} bytes of text, more than the "
                         f"{_MAX_JSON_BYTES} a set_cy model file's JSON may take")
    value = json.loads(str(archive.read(key)[()]))
    if not isinstance(value, dict):
        raise ValueError(f"{archive.path}: {key} is not a JSON object")
    return value


def _layer_keys(prefix):
    return {name: f"{prefix}_{name}" for name in LAYER_ARRAYS}


def _check_layer_headers(archive, keys, n_in, n_out, what):
    """The six arrays of a layer: lengths from the configuration (``n_out + 1`` offsets, ``n_out``
    biases, as many values and velocities as indices, at most ``n_in * n_out``), before reading any."""
    missing = [k for k in keys.values() if k not in archive]
    if missing:
        raise ValueError(f"{archive.path}: missing arrays {missing}")
    archive.expect(keys["indptr"], ndim=1, kinds="iu", length=n_out + 1, what=f" ({what}: {n_out} outputs + 1)")
    archive.expect(keys["indices"], ndim=1, kinds="iu", max_length=n_in * n_out,
                   what=f" connections a {n_in} x {n_out} layer can hold ({what})")
    nnz = archive.header(keys["indices"])[0][0]
    for name in ("data", "velocity"):
        archive.expect(keys[name], ndim=1, kinds="f", length=nnz, what=f" (one per connection: {keys['indices']})")
    for name in ("bias", "bias_velocity"):
        archive.expect(keys[name], ndim=1, kinds="f", length=n_out, what=f" ({what}: one per output)")


def _read_layer(archive, keys):
    """Read a layer's arrays, ``indptr`` first: its end must be the declared number of connections
    before the arrays of that size are read."""
    indptr = archive.read(keys["indptr"])
    nnz = archive.header(keys["indices"])[0][0]
    if indptr.size and (int(indptr[0]) != 0 or int(indptr[-1]) != nnz):
        raise ValueError(f"{archive.label(keys['indptr'])} must start at 0 and end at the {nnz} entries "
                         f"{keys['indices']} declares, got {int(indptr[0])} ... {int(indptr[-1])}")
    return {name: indptr if name == "indptr" else archive.read(key) for name, key in keys.items()}


def _read(archive):
    path = archive.path
    for key in _META_KEYS:
        if key not in archive:
            raise ValueError(f"{path} is not a set_cy model file (no {key!r})")
    archive.expect("format_version", ndim=0, kinds="iu")
    version = archive.read("format_version")
    if int(version) != FORMAT_VERSION:
        raise ValueError(f"{path} has format version {version!r}, this set_cy reads {FORMAT_VERSION}")
    config = _json_object(archive, "config")
    sizes = config.get("layer_sizes")
    if (not isinstance(sizes, list) or len(sizes) < 2
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in sizes)):
        raise ValueError(f"{path}: layer_sizes must be a list of >= 2 positive ints, got {sizes!r}")
    layer_keys = [_layer_keys(f"layer{i}") for i in range(len(sizes) - 1)]
    known = {k for keys in layer_keys for k in keys.values()} | set(_META_KEYS) | {"input_mask"}
    unknown = [k for k in archive.files if k not in known and not k.startswith("extra_")]
    if unknown:
        raise ValueError(f"{path}: unknown arrays {unknown[:5]} (a file of another network or program?)")
    # every header against the configuration, then the declared total against the memory: nothing read yet
    for i, (keys, a, b) in enumerate(zip(layer_keys, sizes[:-1], sizes[1:])):
        _check_layer_headers(archive, keys, a, b, f"layer {i}, {a} -> {b}")
    linear_keys = _layer_keys("extra_linear")
    if any(k in archive for k in linear_keys.values()):
        _check_layer_headers(archive, linear_keys, sizes[0], sizes[-1], f"the linear path, {sizes[0]} -> {sizes[-1]}")
    if "input_mask" in archive:
        archive.expect("input_mask", ndim=1, kinds="b", length=sizes[0], what=" (one per input)")
    extras = [k for k in archive.files if k.startswith("extra_") and k != "extra_state"
              and k not in linear_keys.values()]
    for key in extras:
        archive.expect(key, ndim=1, kinds="biuf")
    declared = sum(archive.header(k)[2] for k in archive.files)
    check_fits(declared, f"{path} declares {declared} bytes of arrays:")
    rng_state, extra_state = _json_object(archive, "rng_state"), _json_object(archive, "extra_state")
    layers = [_read_layer(archive, keys) for keys in layer_keys]
    extra_arrays = {}
    if any(k in archive for k in linear_keys.values()):
        extra_arrays.update({f"linear_{name}": a for name, a in _read_layer(archive, linear_keys).items()})
    extra_arrays.update({k[len("extra_"):]: archive.read(k) for k in extras})
    return {"config": config, "layers": layers,
            "input_mask": archive.read("input_mask") if "input_mask" in archive else None,
            "rng_state": rng_state, "extra_state": extra_state, "extra_arrays": extra_arrays}
