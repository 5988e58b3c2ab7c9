"""The kernel and model tests against a debug build of the extension (bounds checks on, ``-O0 -g``).

The release build reads every array unchecked (``boundscheck=False``, ``wraparound=False``): an index
out of range there reads or writes garbage instead of failing. This test copies the package sources to
a temporary folder, builds the extension there with ``SET_CY_DEBUG=1`` (see ``setup.py``), checks that
the result really is a debug build (an out-of-range access raises ``IndexError``), and runs
``tests/test_kernels_internal.py``, ``tests/test_ops.py`` and ``tests/test_model.py`` against it in a
subprocess, so that any out-of-bounds access in the kernels or the code that calls them fails a test.

``test_model.py::test_learns_real_data`` is left out: it trains on real data sets for tens of seconds
at ``-O0``, and checks accuracy rather than memory safety; the other model tests (gradients against
finite differences, evolution invariants, save/load, resume) run.

How the extension is built: with ``python setup.py build_ext --inplace`` when the running interpreter
has Cython and a setuptools recent enough for ``pyproject.toml`` (a development environment); else
(the usual case after ``pip install -e .``, whose Cython lived only in pip's isolated build
environment) by ``pip wheel --no-deps`` of the copy, which runs the same ``setup.py`` with the same
environment in an isolated build environment holding ``pyproject.toml``'s build requirements; the
extension module is then taken out of the wheel.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from importlib.util import find_spec
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEST_FILES = ["tests/test_kernels_internal.py", "tests/test_ops.py", "tests/test_model.py"]
DESELECT = "not test_learns_real_data"
BUILD_TIMEOUT = 900
TEST_TIMEOUT = 900

# Run in the debug build's folder before the tests: the package must come from there, and the kernels
# must check their bounds. csr_transpose_index writes out_indptr[indices[k] + 1] for every entry, so a
# column index equal to n_cols is one past the end of out_indptr; spmm writes out[r, :] for every row
# of indptr, so an out with one row too few is one row short. The release build does both unchecked
# (memory corruption), the debug build raises IndexError.
CHECK_DEBUG_BUILD = textwrap.dedent("""
    import os
    import sys

    import numpy as np

    import set_cy
    from set_cy import _kernels

    here = os.path.realpath(sys.argv[1])
    for mod in (set_cy, _kernels):
        path = os.path.realpath(mod.__file__)
        assert path.startswith(here + os.sep), f"{mod.__name__} imported from {path}, not from {here}"
    indptr = np.array([0, 2, 3], np.int32)
    bad_indices = np.array([0, 3, 1], np.int32)  # 3 == n_cols: out of range
    try:
        _kernels.csr_transpose_index(indptr, bad_indices, 3, np.empty(4, np.int32), np.empty(3, np.int32),
                                     np.empty(3, np.int32))
    except IndexError as exc:
        print("csr_transpose_index: IndexError:", exc)
    else:
        sys.exit("csr_transpose_index with an index == n_cols did not raise IndexError: not a bounds-checked build")
    try:
        _kernels.spmm(indptr, np.array([0, 1, 2], np.int32), np.ones(3), None, np.ones((3, 2)),
                      np.empty((1, 2)), None, 1)
    except IndexError as exc:
        print("spmm: IndexError:", exc)
    else:
        sys.exit("spmm with an output one row short did not raise IndexError: not a bounds-checked build")
    print("debug build OK:", _kernels.__file__)
""")

# A pytest plugin (-p) for the test run: fails the session at start-up unless set_cy comes from the
# debug build's folder (where this file is written), whatever pytest puts on sys.path.
GUARD_PLUGIN = textwrap.dedent("""
    import os


    def pytest_configure(config):
        import set_cy
        from set_cy import _kernels

        here = os.path.dirname(os.path.realpath(__file__))
        for mod in (set_cy, _kernels):
            path = os.path.realpath(mod.__file__)
            if not path.startswith(here + os.sep):
                raise RuntimeError(f"{mod.__name__} imported from {path}, not from the build under test in {here}")
""")


def _c_compiler():
    """Path of the C compiler that setuptools will use, or None."""
    candidates = [os.environ.get("CC"), sysconfig.get_config_var("CC"), "cc", "gcc", "clang"]
    for cmd in candidates:
        if cmd and cmd.split() and shutil.which(cmd.split()[0]):
            return shutil.which(cmd.split()[0])
    return None


def _can_build_in_place():
    """Whether ``python setup.py build_ext`` can run here: Cython, and setuptools >= 77 (PEP 639 license)."""
    if find_spec("Cython") is None:
        return False
    try:
        major = int(dist_version("setuptools").split(".")[0])
    except (PackageNotFoundError, ValueError):
        return False
    return major >= 77


def _tail(res, n=6000):
    return f"exit code {res.returncode}\n--- stdout ---\n{res.stdout[-n:]}\n--- stderr ---\n{res.stderr[-n:]}"


def _copy_sources(dst):
    """The package sources (no compiled or generated files) and the build files, into ``dst``."""
    shutil.copytree(ROOT / "set_cy", dst / "set_cy",
                    ignore=shutil.ignore_patterns("*.so", "*.pyd", "*.c", "*.o", "__pycache__"))
    for name in ("setup.py", "pyproject.toml", "README.md"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, dst / name)


def _build(dst, env):
    """Build the extension into ``dst/set_cy`` with ``SET_CY_DEBUG=1``; returns how it was built."""
    if _can_build_in_place():
        how = "setup.py build_ext --inplace"
        res = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=dst, env=env,
                             capture_output=True, text=True, timeout=BUILD_TIMEOUT)
        assert res.returncode == 0, f"debug build ({how}) failed:\n{_tail(res)}"
        return how
    how = "pip wheel (isolated build environment)"
    wheels = dst / "_wheels"
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(wheels), str(dst)],
                         cwd=dst, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    assert res.returncode == 0, (f"debug build ({how}) failed; this Python has no Cython, so the build "
                                 f"requirements of pyproject.toml must be installable by pip:\n{_tail(res)}")
    (wheel,) = wheels.glob("set_cy-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        ext = [n for n in zf.namelist() if re.fullmatch(r"set_cy/_kernels\..*(\.so|\.pyd)", n)]
        assert len(ext) == 1, f"no single extension module in {wheel.name}: {zf.namelist()}"
        (dst / ext[0]).write_bytes(zf.read(ext[0]))
    return how


def _compile_args(c_file):
    """``extra_compile_args`` recorded by Cython in the metadata block at the top of the generated C file."""
    head = c_file.read_text(errors="replace")[:20000]
    m = re.search(r"BEGIN: Cython Metadata\s*(\{.*?\})\s*END: Cython Metadata", head, re.S)
    assert m, f"no Cython metadata in {c_file}"
    return json.loads(m.group(1))["distutils"].get("extra_compile_args", [])


def test_kernel_and_model_tests_pass_against_a_debug_build(tmp_path):
    if _c_compiler() is None:
        pytest.skip("no C compiler found (CC, sysconfig CC, cc, gcc, clang): cannot build the debug extension")
    dst = tmp_path / "debug_build"
    dst.mkdir()
    _copy_sources(dst)
    env = dict(os.environ, SET_CY_DEBUG="1")
    how = _build(dst, env)
    print(f"debug build of set_cy in {dst} by {how}")

    args = _compile_args(dst / "set_cy" / "_kernels.c")
    assert "-O0" in args and "-g" in args, f"the extension was not compiled with -O0 -g ({how}): {args}"

    env["PYTHONPATH"] = os.pathsep.join([str(dst)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    # OpenMP threads that spin while they wait take 50-100 times longer when another process holds a
    # core (measured: 3-4 s against 190-300 s for these tests at -O0 on 2 cores, one busy); the results
    # do not depend on it.
    env.setdefault("OMP_WAIT_POLICY", "passive")
    if os.environ.get("SET_CY_DATA"):  # relative to the repository root in the README's test command
        env["SET_CY_DATA"] = str((ROOT / os.environ["SET_CY_DATA"]).resolve())
    res = subprocess.run([sys.executable, "-c", CHECK_DEBUG_BUILD, str(dst)], cwd=dst, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "debug build OK" in res.stdout, f"not a debug build ({how}):\n{_tail(res)}"

    (dst / "_set_cy_debug_guard.py").write_text(GUARD_PLUGIN)
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-p", "_set_cy_debug_guard",
           "-k", DESELECT] + [str(ROOT / f) for f in TEST_FILES]
    res = subprocess.run(cmd, cwd=dst, env=env, capture_output=True, text=True, timeout=TEST_TIMEOUT)
    assert res.returncode == 0, f"tests failed against the debug build ({how}):\n{_tail(res)}"
