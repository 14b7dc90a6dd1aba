"""The README's Python snippets and ``kerneldsl`` commands, and a scratch checkout to run them in.

Used by tests/test_readme.py (snippets) and tests/test_readme_commands.py (commands), two files
so that the parallel test run (``--dist loadfile``) runs them on both workers.

Python snippets (```python blocks) run each on its own, in a fresh interpreter; commands
(the lines of ```console blocks that start with ``kerneldsl``, backslash-continued lines
joined) run through the installed ``kerneldsl`` script. A command too slow for the tests is
sized down by a comment just above its block, ``<!-- tests/test_readme.py runs this with:
OPTIONS -->``: the options are appended, so they replace the README's values (argparse keeps
the last) and the command is otherwise run as written.

Everything runs in a scratch folder laid out like a checkout (``examples/`` of this
repository and the ``../shared`` data folder beside it, when present), so that what it
writes (``out/...``, plots) never lands in the repository. A snippet or command that reads
``../shared/data`` is skipped, with that reason, where the data is absent (a clean clone in CI).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
SHARED = REPO.parent / "shared"


def fenced_blocks(language: str) -> list[tuple[str, re.Match]]:
    """(section slug, match) of every ```<language> block of the README, in order; ``match.group(2)`` is the
    block's body (the section is the nearest ``##`` or ``###`` heading above it, "top" before any)."""
    text = README.read_text()
    found, section = [], "top"
    for match in re.finditer(rf"^(#{{2,3}} [^\n]+)$|^```{language}\n(.*?)^```", text, flags=re.M | re.S):
        if match.group(1):
            section = re.sub(r"[^a-z0-9]+", "-", match.group(1).lstrip("# ").lower()).strip("-")
        else:
            found.append((section, match))
    return found


def snippets() -> list[tuple[str, str]]:
    """(id, code) of every ```python block, the id naming its section and position."""
    found, counts = [], {}
    for section, match in fenced_blocks("python"):
        counts[section] = counts.get(section, 0) + 1
        found.append((f"{section}-{counts[section]}", match.group(2)))
    return found


SNIPPETS = snippets()
SIZED_DOWN = re.compile(r"<!-- tests/test_readme\.py runs this with: (.*?) -->\n$")


def commands() -> list[tuple[str, list[str]]]:
    """(id, argv) of every ``kerneldsl`` command in a ```console block, sized down where the README says so."""
    text = README.read_text()
    found, counts = [], {}
    for section, match in fenced_blocks("console"):
        sized = SIZED_DOWN.search(text, 0, match.start())
        extra = shlex.split(sized.group(1)) if sized and sized.end() == match.start() else []
        for line in match.group(2).replace("\\\n", " ").splitlines():
            argv = shlex.split(line)
            if argv[:1] == ["kerneldsl"]:
                counts[section] = counts.get(section, 0) + 1
                found.append((f"{section}-{argv[1]}-{counts[section]}", argv + extra))
    return found


COMMANDS = commands()


def scratch_checkout(tmp_path: Path, text: str) -> Path:
    """A folder laid out like a checkout, to run ``text`` in (skips where it needs the absent shared data)."""
    if "../shared/data" in text and not (SHARED / "data").exists():
        pytest.skip(f"reads ../shared/data, which is absent beside this checkout ({SHARED})")
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / "examples").symlink_to(REPO / "examples")
    if SHARED.exists():
        (tmp_path / "shared").symlink_to(SHARED)
    return checkout


