"""Sphinx helpers of the kerneldsl documentation.

* ``kerneldsl-cli``: a directive that runs ``kerneldsl --help`` and the ``--help`` of every
  sub-command it lists, at build time, one section each (the CLI reference cannot go stale);
* every name of ``kerneldsl.__all__`` must be documented (a warning, so the strict build fails);
* pages listed in the ``kd_docs_unexecuted`` setting get a visible note that their code did not
  run in this build (the MNIST recipe where the sweep is absent);
* ``ExplicitOrder``: the reading order of the gallery scripts (sphinx-gallery's
  ``within_subsection_order``);
* Google-style sections (``Args:``, ``Returns:``) in the docstrings of functions and classes,
  through napoleon's parser; attribute and property docstrings are left as written (napoleon
  would read their first ``words: more`` as a type);
* dataclass signatures show a ``default_factory`` default as ``...``;
* single backticks in docstrings are references (``default_role = "py:obj"``): to a documented
  name a link; to a real but undocumented kerneldsl object (also a name in a signature) plain
  text; to something that does not exist a warning, so the strict build fails;
* the "Project" pages (licence, changelog) are listed only where their root files exist;
* an image scraper (``image_scrapers = ("matplotlib", "kd_docs")``) for the matplotlib ``Figure``
  objects that kerneldsl returns without pyplot (``result.plot()``, ``kd.plot_structure``): every
  new ``Figure`` bound to a name of the script is drawn under the block that made it.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
from pathlib import Path

from docutils import nodes
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)

ORDER = [
    # guide
    "getting_started.py", "language.py",
    # recipes
    "hands_on_kernel.py", "tick_tock_budget.py", "many_workers.py", "from_optuna.py", "making_it_fast.py",
]


class ExplicitOrder:
    """Sort key of the gallery scripts: the position in `ORDER`, unknown scripts last by name."""

    def __init__(self, src_dir: str):
        self.src_dir = src_dir

    def __call__(self, filename: str):
        return (ORDER.index(filename), "") if filename in ORDER else (len(ORDER), filename)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {', '.join(ORDER)}>"


def mnist_sweep_path(root: Path) -> Path:
    """``$KERNELDSL_MNIST_SWEEP``, else ``../shared/data/mnist1_sweep.jsonl`` beside the repository root."""
    return Path(os.environ.get("KERNELDSL_MNIST_SWEEP") or root.parent / "shared" / "data" / "mnist1_sweep.jsonl")


def _help(argv: list[str]) -> str:
    """What ``kerneldsl ARGV --help`` prints, 88 columns wide."""
    from kerneldsl.cli import main

    out, old = io.StringIO(), os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "88"
    try:
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            main([*argv, "--help"])
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old
    return out.getvalue().rstrip()


def subcommands(top_help: str) -> list[str]:
    """The sub-commands the top-level usage lists (``{explain,cv,...}``)."""
    match = re.search(r"\{([a-z][a-z0-9_,-]*)\}", top_help)
    return match.group(1).split(",") if match else []


class KerneldslCli(SphinxDirective):
    """``.. kerneldsl-cli::``: the ``--help`` of ``kerneldsl`` and of each sub-command, as run now.

    Built as docutils nodes (not parsed text), so it works the same in Markdown and rST pages.
    """

    has_content = False

    def _block(self, text: str) -> nodes.literal_block:
        block = nodes.literal_block(text, text, language="text")
        block["classes"].append("kerneldsl-help")
        return block

    def run(self):
        top = _help([])
        out = [nodes.paragraph("", "", nodes.literal("kerneldsl --help", "kerneldsl --help"), nodes.Text(":")),
               self._block(top)]
        for command in subcommands(top):
            title = f"kerneldsl {command}"
            section = nodes.section(ids=[nodes.make_id(title)], names=[nodes.fully_normalize_name(title)])
            section += nodes.title(title, title)
            section += self._block(_help([command]))
            self.state.document.note_implicit_target(section)
            out.append(section)
        return out


def reread_cli_pages(app, env, added, changed, removed) -> list[str]:
    """Pages with ``kerneldsl-cli`` are read again on every build: the help texts come from the code."""
    return [doc for doc in env.found_docs if doc == "cli"]


def check_public_names(app, env) -> None:
    """Warn about every name of ``kerneldsl.__all__`` that no page documents."""
    import kerneldsl

    documented = set(env.get_domain("py").objects)
    for name in kerneldsl.__all__:
        if name != "__version__" and f"kerneldsl.{name}" not in documented:
            logger.warning(f"kerneldsl.{name} is public (kerneldsl.__all__) but not documented: add it to "
                           "docs/api/*.md", type="kd_docs", subtype="undocumented")


def note_unexecuted(app, docname: str, source: list[str]) -> None:
    """Put a note under the title of a page whose code was not run in this build, saying why."""
    reason = app.config.kd_docs_unexecuted.get(docname)
    if not reason:
        return
    lines = source[0].splitlines()
    for i in range(1, len(lines)):
        if lines[i] and set(lines[i]) == {"="} and lines[i - 1].strip():
            note = ["", ".. warning::", "", f"   The code of this page was **not run** in this build: {reason}.",
                    "   What follows is the code without its output; with the data in place "
                    "(``KERNELDSL_MNIST_SWEEP``) ``make docs`` runs it.", ""]
            source[0] = "\n".join(lines[:i + 1] + note + lines[i + 1:])
            logger.info(f"{docname}: not executed ({reason})")
            return


_SHOWN: dict[str, list] = {}
"""Per gallery script: the Figures already drawn."""


def figure_scraper(block, block_vars, gallery_conf, **kwargs) -> str:
    """Save each ``matplotlib.figure.Figure`` that a script's names hold and that was not drawn yet.

    Each image links to itself at full size (kerneldsl's figures are wide: a click shows every label).
    """
    from matplotlib.figure import Figure

    shown = _SHOWN.setdefault(str(block_vars["src_file"]), [])
    new = []
    for value in block_vars["example_globals"].values():
        if isinstance(value, Figure) and not any(value is old for old in shown + new):
            new.append(value)
    rst = []
    for figure, path in zip(new, block_vars["image_path_iterator"]):
        shown.append(figure)
        figure.savefig(path, dpi=130)
        source = "/" + Path(path).relative_to(gallery_conf["src_dir"]).as_posix()
        title = figure.get_suptitle() or next((ax.get_title() for ax in figure.axes if ax.get_title()), "figure")
        title = " ".join(title.split())
        # Gallery pages sit one folder below the root; Sphinx copies images to _images/.
        rst.append(f"\n.. image:: {source}\n   :alt: {title}\n   :class: sphx-glr-single-img\n"
                   f"   :target: ../_images/{Path(path).name}\n\n")
    return "".join(rst)


def _get_sg_image_scraper():
    """sphinx-gallery's hook for ``image_scrapers = (..., "kd_docs")``."""
    return figure_scraper


def google_sections(app, what, name, obj, options, lines: list[str]) -> None:
    """Rewrite ``Args:`` / ``Returns:`` sections with napoleon's Google parser, except in attribute docstrings."""
    from sphinx.ext.napoleon import Config
    from sphinx.ext.napoleon.docstring import GoogleDocstring

    if what in {"attribute", "data", "property"} or not lines:
        return
    config = Config(napoleon_use_param=True, napoleon_use_rtype=True, napoleon_use_ivar=True,
                    napoleon_numpy_docstring=False)
    lines[:] = GoogleDocstring(lines, config, app, what, name, obj, options).lines()


def dataclass_factories(app, what, name, obj, options, signature, return_annotation):
    """Show a dataclass field's ``default_factory`` default as ``...``: Sphinx cannot parse ``<factory>``."""
    if signature and "<factory>" in signature:
        return signature.replace("<factory>", "..."), return_annotation
    return None


def _exists(target: str) -> bool:
    """Whether the dotted name ``kerneldsl.a.B`` names a real object (a dataclass field counts)."""
    import importlib

    parts = target.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for i, attr in enumerate(parts[cut:]):
            if hasattr(obj, attr):
                obj = getattr(obj, attr)
            elif i == len(parts[cut:]) - 1 and attr in getattr(obj, "__dataclass_fields__", {}):
                return True
            else:
                return False
        return True
    return False


def _real(target: str, node) -> bool:
    """Whether ``target`` names a real kerneldsl object: a full ``kerneldsl.*`` name, or a name seen
    from the module of the docstring it was written in (``docstring of kerneldsl.loop.x.f``)."""
    if target.startswith("kerneldsl."):
        return _exists(target)
    where = re.search(r"docstring of (kerneldsl\.[\w.]+)", node.source or "")
    if where is None:
        return False
    parts = where.group(1).split(".")
    if any(_exists(".".join(parts[:cut] + [target])) for cut in range(len(parts), 1, -1)):
        return True
    # a helper of a sibling module (`qLogCostImprovement` in kerneldsl.loop.tick_tock's docstring)
    return target.isidentifier() and any(name.startswith("kerneldsl.") and hasattr(module, target)
                                         for name, module in list(sys.modules.items()))


def plain_internal_types(app, env, node, contnode):
    """A reference to an undocumented but real kerneldsl object becomes plain text (a name in a
    signature, or a docstring's `name` of a helper); a reference to nothing still fails the build."""
    if node.get("refdomain") == "py" and _real(node.get("reftarget", ""), node):
        return contnode
    return None


def project_pages(app, docname: str, source: list[str]) -> None:
    """Append the hidden "Project" toctree to the root page, listing the project pages that are built."""
    pages = app.config.kd_docs_project_pages
    if docname == app.config.root_doc and pages:
        source[0] += "\n```{toctree}\n:caption: Project\n:hidden:\n\n" + "\n".join(pages) + "\n```\n"


def setup(app):
    app.add_config_value("kd_docs_unexecuted", {}, "env")
    app.add_config_value("kd_docs_project_pages", [], "env")
    app.connect("autodoc-process-docstring", google_sections)
    app.connect("autodoc-process-signature", dataclass_factories)
    app.connect("missing-reference", plain_internal_types)
    app.connect("source-read", project_pages)
    app.add_directive("kerneldsl-cli", KerneldslCli)
    app.connect("env-get-outdated", reread_cli_pages)
    app.connect("env-check-consistency", check_public_names)
    app.connect("source-read", note_unexecuted)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
