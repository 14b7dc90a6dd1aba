"""Every Python snippet of README.md runs as written, each on its own, in a fresh interpreter.

Snippets run in a scratch folder laid out like a checkout (``examples/`` of this repository
and the ``../shared`` data folder beside it, when present), so that what they write
(``out/...``) never lands in the repository. A snippet that reads ``../shared/data`` is
skipped, with that reason, where the data is absent (a clean clone in CI).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
SHARED = REPO.parent / "shared"


def snippets() -> list[tuple[str, str]]:
    """(id, code) of every ```python block, the id naming its section and position."""
    text = README.read_text()
    found, section, counts = [], "top", {}
    for match in re.finditer(r"^(#{2,3} [^\n]+)$|^```python\n(.*?)^```", text, flags=re.M | re.S):
        if match.group(1):
            section = re.sub(r"[^a-z0-9]+", "-", match.group(1).lstrip("# ").lower()).strip("-")
            continue
        counts[section] = counts.get(section, 0) + 1
        found.append((f"{section}-{counts[section]}", match.group(2)))
    return found


SNIPPETS = snippets()


def test_the_readme_has_python_snippets():
    assert len(SNIPPETS) >= 5, [name for name, _ in SNIPPETS]


@pytest.mark.parametrize("code", [code for _, code in SNIPPETS], ids=[name for name, _ in SNIPPETS])
def test_snippet_runs_as_written(code, tmp_path):
    if "../shared/data" in code and not (SHARED / "data").exists():
        pytest.skip(f"reads ../shared/data, which is absent beside this checkout ({SHARED})")
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / "examples").symlink_to(REPO / "examples")
    if SHARED.exists():
        (tmp_path / "shared").symlink_to(SHARED)
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": str(checkout)}
    run = subprocess.run([sys.executable, "-c", code], cwd=checkout, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, f"snippet failed:\n{code}\n--- stderr ---\n{run.stderr[-3000:]}"
