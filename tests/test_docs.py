"""The documentation's sources stay in step with the code, without building the site.

``make docs`` (CI) builds the site strictly and runs every recipe; these checks are the
fast part of it, so that ``make test`` already says when a public name has no entry in the
API reference or a recipe is missing from the reading order.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import kerneldsl

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _api_names() -> set[str]:
    text = "\n".join(page.read_text() for page in (DOCS / "api").glob("*.md"))
    return set(re.findall(r"^\.\. auto(?:function|class|exception|data):: kerneldsl\.(\w+)\s*$", text, flags=re.M))


def test_every_public_name_has_an_entry_in_the_api_reference():
    missing = sorted(set(kerneldsl.__all__) - {"__version__"} - _api_names())
    assert not missing, f"add these to docs/api/*.md: {missing}"


def test_the_api_reference_names_only_public_names():
    stale = sorted(_api_names() - set(kerneldsl.__all__))
    assert not stale, f"docs/api/*.md documents names that kerneldsl no longer exports: {stale}"


def test_every_gallery_page_is_in_the_reading_order():
    # ORDER in docs/_ext/kd_docs.py, read without importing Sphinx (not installed for `make test`)
    tree = ast.parse((DOCS / "_ext" / "kd_docs.py").read_text())
    order = next(ast.literal_eval(node.value) for node in tree.body
                 if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "ORDER" for t in node.targets))
    pages = {p.name for p in (DOCS / "gallery").glob("*/*.py") if p.name != "toy_jobs.py"}
    assert pages and pages <= set(order), sorted(pages - set(order))
