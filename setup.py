"""Build script: cythonize the kernels with OpenMP when the compiler supports it.

Environment switches
--------------------
SET_CY_DEBUG=1
    Build with bounds checks, wrap-around and initialisation checks turned back on, ``-O0 -g``.
SET_CY_NO_OPENMP=1
    Build without OpenMP even if the compiler supports it.
SET_CY_OPENMP_CFLAGS, SET_CY_OPENMP_LDFLAGS
    The compile and link flags for OpenMP (space-separated; default ``-fopenmp`` for both), for
    compilers that spell it differently: Apple clang with Homebrew's libomp wants
    ``-Xpreprocessor -fopenmp -I<libomp>/include`` and ``-L<libomp>/lib -lomp`` (the macOS settings of
    ``[tool.cibuildwheel]`` in pyproject.toml). The test program must build with them, as with the default.
SET_CY_MARCH=<arch>
    Add ``-march=<arch>`` (for example ``native``). Off by default: the row kernels (the innermost
    loops, in ``set_cy/_rowkernels.h``) are already built for several instruction sets by GCC function
    multi-versioning (``target_clones``: x86-64-v4 (AVX-512), x86-64-v3 (AVX2 + FMA) and the baseline),
    and the loader picks the best clone for the CPU at run time. That needs GCC >= 12 on x86-64 (not
    clang); elsewhere, or with ``-DSET_CY_NO_CLONES``, one baseline version is built, and
    ``set_cy.isa_dispatch_enabled()`` returns False.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import warnings

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("SET_CY_DEBUG", "0") not in ("", "0")
MARCH = os.environ.get("SET_CY_MARCH", "")


def _compiler_command():
    import sysconfig

    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    return cc.split()


def openmp_flags():
    """Return (compile_args, link_args) for OpenMP, or ([], []) when a test program does not build."""
    if os.environ.get("SET_CY_NO_OPENMP", "0") not in ("", "0"):
        return [], []
    if sys.platform == "win32":
        return ["/openmp"], []
    flags = os.environ.get("SET_CY_OPENMP_CFLAGS", "-fopenmp").split()
    link = os.environ.get("SET_CY_OPENMP_LDFLAGS", "-fopenmp").split()
    src = "#include <omp.h>\nint main(void){int n=0;\n#pragma omp parallel reduction(+:n)\nn+=1;\nreturn n>0?0:1;}\n"
    tmp = tempfile.mkdtemp(prefix="set_cy_omp_")
    try:
        path = os.path.join(tmp, "probe.c")
        with open(path, "w") as fh:
            fh.write(src)
        cmd = _compiler_command() + flags + [path, "-o", os.path.join(tmp, "probe")] + link
        ok = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
    except OSError:
        ok = False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not ok:
        warnings.warn("set_cy: the C compiler cannot build OpenMP programs; building single-threaded kernels")
        return [], []
    return flags, link


omp_compile, omp_link = openmp_flags()
compile_args = ["-O0", "-g"] if DEBUG else ["-O3"]
# -std=c99 alone turns off the contraction of a * b + c into one fused multiply-add; with -ffp-contract=fast
# the kernels' clones for CPUs that have FMA (x86-64-v3 and v4) use it. bench/compare_builds.py against the
# build without it (bench/README.md): the SDDMM and fused update of the 1000 x 1000 layer 1.03x-1.20x faster,
# the rest within the run's noise. Results then differ in the last bit from those of a CPU without FMA;
# every comparison in the tests has a tolerance.
compile_args += ["-std=c99", "-ffp-contract=fast"] if sys.platform != "win32" else []
if MARCH:
    compile_args.append(f"-march={MARCH}")

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": not DEBUG,
    "nonecheck": DEBUG,
    "embedsignature": True,
}

extensions = [
    Extension(
        "set_cy._kernels",
        ["set_cy/_kernels.pyx"],
        include_dirs=[np.get_include(), "set_cy"],
        define_macros=[
            ("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"),
            ("SET_CY_OPENMP", "1" if omp_compile else "0"),
        ],
        extra_compile_args=compile_args + omp_compile,
        extra_link_args=omp_link,
    )
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives=directives,
    )
)
