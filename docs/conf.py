"""Sphinx configuration of set_cy's documentation site.

Build it from the repository root (``pip install -e '.[docs]'`` first):
``python -m sphinx -W --keep-going -b html docs docs/_build/html``. ``-W`` turns every warning (a
broken reference, a docstring numpydoc cannot parse, an example that fails) into an error;
tests/test_docs.py runs exactly that build.
"""
import os
from importlib.util import find_spec
from pathlib import Path

import set_cy

ROOT = Path(__file__).resolve().parents[1]

project = "set_cy"
author = "the set_cy developers"
copyright = "2026, the set_cy developers"
release = version = set_cy.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "auto_examples/*.ipynb", "auto_examples/*.py", "auto_examples/*.zip",
                    "auto_examples/*.codeobj.json", "auto_examples/*.md5", "sg_execution_times.rst"]
templates_path = ["_templates"]

# Markdown pages (the guide, and bench/README.md and data/README.md included as they are): myst-parser
# reads the same GitHub Markdown the repository shows, headings get anchors as GitHub makes them, so
# links like bench.md#compact-storage resolve and are checked.
myst_heading_anchors = 4
myst_enable_extensions = ["dollarmath"]

autosummary_generate = True
# scikit-learn adds set_*_request methods to every estimator (metadata routing); they are its API, not
# set_cy's, and their docstrings point into scikit-learn's own site
autodoc_default_options = {"members": True, "inherited-members": False, "show-inheritance": True,
                           "exclude-members": "set_fit_request,set_partial_fit_request,set_score_request"}
autodoc_inherit_docstrings = False
if find_spec("torch") is None:  # set_cy.torch documented without torch installed (it is optional)
    autodoc_mock_imports = ["torch"]  # a method without its own docstring does not borrow torch's
autodoc_typehints = "none"
numpydoc_show_class_members = False
numpydoc_xref_param_type = False
numpydoc_attributes_as_param_list = True

intersphinx_mapping = {}  # nothing outside this repository is reachable from the build machines
nitpicky = False

html_theme = "pydata_sphinx_theme"
html_title = f"set_cy {release}"
html_theme_options = {"navigation_depth": 3, "show_toc_level": 2, "use_edit_page_button": False,
                      "secondary_sidebar_items": ["page-toc"]}
html_static_path = []

# The gallery: every examples/plot_*.py runs during the build and saves its figures into the page.
# Each runs on small data in seconds. The gene example reads ALLAML: from SET_CY_DATA, else from the
# project's shared data folder beside the repository when it exists (a build without it fails there).
sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "download_all_examples": False,
    "abort_on_example_error": True,
    "only_warn_on_example_error": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib",),
    "reset_modules": ("matplotlib",),
    "capture_repr": (),
    "show_memory": False,
    "write_computation_times": False,
    "plot_gallery": "True",
    # SET_CY_DOCS_RERUN=1 (tests/test_docs.py) runs every example even when docs/auto_examples holds the
    # output of an earlier build of the same file
    "run_stale_examples": os.environ.get("SET_CY_DOCS_RERUN", "0") not in ("", "0"),
}
os.environ.setdefault("MPLBACKEND", "Agg")
if "SET_CY_DATA" not in os.environ and (ROOT.parent / "shared" / "data").is_dir():
    os.environ["SET_CY_DATA"] = str(ROOT.parent / "shared" / "data")
