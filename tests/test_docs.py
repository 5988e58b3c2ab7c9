"""The documentation site (docs/, Sphinx): it builds with warnings as errors, its API reference covers
every name of every ``__all__``, the gallery's examples run and draw their figures during the build, and
every docstring example runs as a doctest. The Python blocks of the guide's pages run in test_readme.py.
"""
import doctest
import importlib
import os
import pkgutil
import re
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

import set_cy

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("plot_*.py"))
TIMEOUT = 900


def _modules():
    """set_cy and every submodule, private ones included (set_cy.torch only when torch is installed)."""
    names = ["set_cy"] + [m.name for m in pkgutil.walk_packages(set_cy.__path__, "set_cy.")]
    return [n for n in names if n != "set_cy._kernels" and (n != "set_cy.torch" or find_spec("torch"))]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    missing = [m for m in ("sphinx", "numpydoc", "pydata_sphinx_theme", "sphinx_gallery", "myst_parser",
                           "matplotlib") if find_spec(m) is None]
    assert not missing, f"{missing} missing: the test extra installs them (pip install -e '.[test]')"
    out = tmp_path_factory.mktemp("site")
    # every example runs again, even if an earlier build in docs/auto_examples has its output
    env = dict(os.environ, SET_CY_DOCS_RERUN="1", MPLBACKEND="Agg")
    res = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
                          "-d", str(out / "doctrees"), str(ROOT / "docs"), str(out / "html")],
                         capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT, env=env)
    assert res.returncode == 0, f"sphinx-build -W failed:\n{res.stdout[-4000:]}\n{res.stderr[-8000:]}"
    return out / "html"


def _documented_ids(html_dir):
    ids = set()
    for page in (html_dir / "api").glob("*.html"):
        ids.update(re.findall(r'<dt class="sig sig-object py" id="([\w.]+)"', page.read_text()))
        ids.update(m for m in re.findall(r'id="module-([\w.]+)"', page.read_text()))
    return ids


def _undocumented(ids):
    """Names of an ``__all__`` with no entry in the API reference, neither under the module's name nor
    under another module that exports the same object by the same name (a re-export)."""
    homes = {}
    for mod_name in _modules():
        mod = importlib.import_module(mod_name)
        for name in getattr(mod, "__all__", []):
            homes.setdefault(name, []).append((mod_name, getattr(mod, name)))
    missing = []
    for name, places in homes.items():
        for mod_name, obj in places:
            if f"{mod_name}.{name}" in ids or (obj.__class__.__name__ == "module" and obj.__name__ in ids):
                continue
            if not any(f"{other}.{name}" in ids and other_obj is obj for other, other_obj in places):
                missing.append(f"{mod_name}.{name}")
    return sorted(missing)


def test_api_reference_covers_every_name_of_every_all(site):
    ids = _documented_ids(site)
    assert "set_cy.SparseMLP.fit" in ids and "set_cy.ops.sddmm" in ids and "set_cy.ops" in ids
    assert _undocumented(ids) == []
    # the check can fail: take one entry away and its name is reported
    assert _undocumented(ids - {"set_cy.ops.sddmm"}) == ["set_cy.ops.sddmm"]
    assert "set_cy.trainer.SparseMLP" in _undocumented(ids - {"set_cy.SparseMLP"})


def test_gallery_examples_ran_and_drew_their_figures(site):
    assert EXAMPLES, "examples/plot_*.py: the gallery is empty"
    for example in EXAMPLES:
        page = site / "auto_examples" / f"{example.stem}.html"
        assert page.is_file(), page
        figure = site / "_images" / f"sphx_glr_{example.stem}_001.png"
        assert figure.is_file() and figure.stat().st_size > 10_000, figure
        assert f"sphx_glr_{example.stem}_001.png" in page.read_text()


def test_pages_link_the_guide_and_the_benchmarks(site):
    index = (site / "index.html").read_text()
    for page in ("getting-started", "guide/estimators", "guide/storage-checkpoints", "memory", "benchmarks",
                 "api/index", "auto_examples/index"):
        assert f'href="{page}.html"' in index, page
    # bench/README.md is included as it is: its tables are on the page
    assert "SET-MLP against the baselines users run" in (site / "benchmarks.html").read_text()


@pytest.mark.parametrize("mod_name", [m for m in _modules()])
def test_docstring_examples_run(mod_name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    mod = importlib.import_module(mod_name)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in doctest.DocTestFinder().find(mod, mod_name):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples of {mod_name} failed"


def test_the_main_public_names_have_docstring_examples():
    finder = doctest.DocTestFinder()
    for name in ("set_cy.trainer.SparseMLP", "set_cy.estimator.SETClassifier", "set_cy.estimator.SETRegressor",
                 "set_cy.linear.SparseLinear", "set_cy.ops.sparse_matmul", "set_cy.monitor.MemoryMonitor",
                 "set_cy.sizing.estimate_memory"):
        mod_name, attr = name.rsplit(".", 1)
        tests = finder.find(getattr(importlib.import_module(mod_name), attr), name)
        assert sum(len(t.examples) for t in tests) >= 2, f"{name} has no runnable example in its docstring"
