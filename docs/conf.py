"""Sphinx configuration of the kerneldsl documentation (``make docs``; see docs/README.md).

Executed pages are sphinx-gallery scripts under ``gallery/``: their code runs when the site
builds and their printed output, tables and matplotlib figures are the page's. Markdown pages
(MyST) hold the rest; the API reference is autodoc from the docstrings.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(DOCS / "_ext"))

import kerneldsl  # noqa: E402  (the installed package: `pip install -e .` from the root)

from kd_docs import mnist_sweep_path  # noqa: E402

project = "kerneldsl"
author = "the kerneldsl authors"
copyright = "the kerneldsl authors"
release = kerneldsl.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "sphinx_gallery.gen_gallery",
    "myst_parser",
    "kd_docs",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "README.md", "gallery/**/GALLERY_HEADER.rst", "gallery/**/*.py",
                    "gallery/**/*.kernel"]
# LICENSE and CHANGELOG.md live at the repository root; their pages exist only where the root files do.
kd_docs_project_pages = []
for page, root_file in (("project/changelog", "CHANGELOG.md"), ("project/license", "LICENSE")):
    if (ROOT / root_file).exists():
        kd_docs_project_pages.append(page)
    else:
        exclude_patterns.append(page + ".md")

# `name` in a docstring is a reference: a link to a documented name (docs/_ext/kd_docs.py says what
# happens to the others).
default_role = "py:obj"
nitpicky = True
# Types of other libraries: their inventories are not fetched (the build runs offline), so
# references to them stay plain text instead of failing the strict build.
nitpick_ignore_regex = [
    (r"py:.*", r"(torch|gpytorch|botorch|linear_operator|pandas|numpy|matplotlib|distributed|concurrent|"
               r"collections|typing|os|pathlib|argparse|enum|dataclasses|abc)(\..*)?"),
    (r"py:class", r"(Tensor|Size|Path|PathLike|Callable|Sequence|Mapping|Iterable|Any|Figure|DataFrame|"
                  r"InputTransform|Kernel|Module|Model|Executor|optional|ModelFactory|BudgetLike)"),
]

autodoc_typehints = "signature"
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True}
autodoc_preserve_defaults = True
add_module_names = False

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

html_theme = "furo"
html_title = f"kerneldsl {release}"
html_static_path = ["_static"]
html_css_files = ["kd.css"]
html_show_sourcelink = False
pygments_style = "friendly"
pygments_dark_style = "monokai"

MNIST_SWEEP = mnist_sweep_path(ROOT)
# Recipes that read the MNIST sweep run only where it is; elsewhere their pages are built
# from the code without running it and say so at the top (kd_docs.note_unexecuted).
NEEDS_MNIST = ("hands_on_kernel.py",)
mnist_present = MNIST_SWEEP.exists()
kd_docs_unexecuted = {} if mnist_present else {
    f"recipes/{Path(name).stem}": f"the MNIST sweep ({MNIST_SWEEP}) is absent on the machine that built this page"
    for name in NEEDS_MNIST}

sphinx_gallery_conf = {
    "examples_dirs": ["gallery/guide", "gallery/recipes"],
    "gallery_dirs": ["guide", "recipes"],
    # Every script runs, but those of NEEDS_MNIST only where the sweep is.
    "filename_pattern": (r"/[^/]+\.py$" if mnist_present
                         else r"/(?!(?:" + "|".join(n.replace(".", r"\.") for n in NEEDS_MNIST) + r")$)[^/]+\.py$"),
    "ignore_pattern": r"__init__\.py|toy_jobs\.py",   # modules the recipes import, not pages
    "within_subsection_order": "kd_docs.ExplicitOrder",
    "abort_on_example_error": False,   # every failing script is reported; the build fails (below)
    "only_warn_on_example_error": False,
    "capture_repr": ("_repr_html_", "__repr__"),
    "ignore_repr_types": r"matplotlib\.|tuple|list|dict|NoneType",
    "image_scrapers": ("matplotlib", "kd_docs"),
    "matplotlib_animations": False,
    "remove_config_comments": True,
    "download_all_examples": False,
    "show_signature": False,
    "show_memory": False,
    "min_reported_time": 1,
    "reset_modules": ("matplotlib",),
    "thumbnail_size": (320, 224),
    "plot_gallery": "True",
}
# The recipes read the sweep from the environment (KERNELDSL_MNIST_SWEEP) with the same default.
os.environ.setdefault("KERNELDSL_MNIST_SWEEP", str(MNIST_SWEEP))
os.environ.setdefault("MPLBACKEND", "Agg")
