"""Every Python snippet and every ``kerneldsl`` command of README.md runs as written.

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

import os
import re
import shlex
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
SIZED_DOWN = re.compile(r"<!-- tests/test_readme\.py runs this with: (.*?) -->\n$")


def commands() -> list[tuple[str, list[str]]]:
    """(id, argv) of every ``kerneldsl`` command in a ```console block, sized down where the README says so."""
    text = README.read_text()
    found, section, counts = [], "top", {}
    for match in re.finditer(r"^(#{2,3} [^\n]+)$|^```console\n(.*?)^```", text, flags=re.M | re.S):
        if match.group(1):
            section = re.sub(r"[^a-z0-9]+", "-", match.group(1).lstrip("# ").lower()).strip("-")
            continue
        sized = SIZED_DOWN.search(text, 0, match.start())
        extra = shlex.split(sized.group(1)) if sized and sized.end() == match.start() else []
        for line in match.group(2).replace("\\\n", " ").splitlines():
            argv = shlex.split(line)
            if argv[:1] == ["kerneldsl"]:
                counts[section] = counts.get(section, 0) + 1
                found.append((f"{section}-{argv[1]}-{counts[section]}", argv + extra))
    return found


COMMANDS = commands()


def test_the_readme_has_python_snippets():
    assert len(SNIPPETS) >= 5, [name for name, _ in SNIPPETS]


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


@pytest.mark.parametrize("code", [code for _, code in SNIPPETS], ids=[name for name, _ in SNIPPETS])
def test_snippet_runs_as_written(code, tmp_path):
    checkout = scratch_checkout(tmp_path, code)
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": str(checkout)}
    run = subprocess.run([sys.executable, "-c", code], cwd=checkout, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, f"snippet failed:\n{code}\n--- stderr ---\n{run.stderr[-3000:]}"


def test_the_readme_has_commands():
    names = {argv[1] for _, argv in COMMANDS}
    assert {"explain", "features", "cv", "fit", "bench"} <= names, names
    bench = next(argv for _, argv in COMMANDS if argv[1] == "bench")
    assert bench[-7:] == ["--n", "40", "--batch", "1,2", "--repeats", "1", "--no-memory"]  # sized down


@pytest.mark.parametrize("argv", [argv for _, argv in COMMANDS], ids=[name for name, _ in COMMANDS])
def test_command_runs_as_written(argv, tmp_path):
    checkout = scratch_checkout(tmp_path, " ".join(argv))
    script = Path(sys.executable).with_name("kerneldsl")  # the console script installed beside this Python
    command = [str(script), *argv[1:]] if script.exists() else [sys.executable, "-m", "kerneldsl.cli", *argv[1:]]
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    run = subprocess.run(command, cwd=checkout, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, f"command failed: {shlex.join(argv)}\n--- stderr ---\n{run.stderr[-3000:]}"
    assert "Traceback" not in run.stderr and run.stdout.strip(), run.stderr[-3000:]
