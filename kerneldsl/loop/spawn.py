"""Checks made before an objective is sent to other processes, so their failures are clear errors up front.

Two things go wrong when trials run in worker processes, and both used to surface as
raw multiprocessing tracebacks (``RuntimeError: An attempt has been made to start a
new process before the current process has finished its bootstrapping phase``, then
``EOFError`` or a broken pool) after zero trials:

* The objective cannot be pickled (a lambda, a nested function, a bound method of an
  object holding a lock or an open file, ...): `check_picklable`.
* Spawned workers (the ``spawn`` and ``forkserver`` start methods: process isolation,
  kerneldsl's own process pools, and any pool on macOS or Windows) start by importing
  the main script again. A script that starts the study from its top level, outside
  ``if __name__ == "__main__":``, would start it again in every worker:
  `check_main_guard` finds the line of the main script that led to the call and tells
  the user to put it under the guard. A spawned worker that gets there anyway (the
  check could not see the script) raises the same explanation instead of recursing
  (`in_spawned_bootstrap`).
"""

from __future__ import annotations

import ast
import os
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["SpawnError", "check_picklable", "check_main_guard", "describe_callable", "in_spawned_bootstrap",
           "worker_context"]

GUARD_EXAMPLE = ('    def main():\n        ...  # build the space, the study, and run it\n\n'
                 '    if __name__ == "__main__":\n        main()')


class SpawnError(ValueError):
    """An objective or a script that cannot run in worker processes as it is."""


def describe_callable(objective: Any) -> str:
    """A short name for an objective: ``module.qualname`` for functions, the class for callable objects."""
    name = getattr(objective, "__qualname__", None) or type(objective).__qualname__
    module = getattr(objective, "__module__", None) or type(objective).__module__
    return f"{module}.{name}" if module else name


def check_picklable(objective: Callable, where: str, workers: str, dumps: Callable[[Any], bytes] | None = None) -> None:
    """Raise `SpawnError` naming ``objective`` when ``dumps`` (default: `pickle.dumps`) cannot serialise it.

    ``where`` names the caller (``Study.optimize``), ``workers`` the destination (``process pool workers``).
    """
    import pickle

    name = describe_callable(objective)
    try:
        (dumps or pickle.dumps)(objective)
    except Exception as exc:  # noqa: BLE001 - any serialisation failure means the same thing to the user
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SpawnError(
            f"{where}: the objective {name} cannot be sent to {workers}: it cannot be pickled ({reason}). "
            "Define it as a function at the top level of a module (not a lambda, a nested function or a closure), "
            "or as an instance of a top-level class whose attributes can be pickled"
        ) from None
    main = sys.modules.get("__main__")
    if (getattr(objective, "__module__", None) == "__main__" and getattr(main, "__file__", None) is None
            and dumps is None):
        raise SpawnError(
            f"{where}: the objective {name} is defined in an interactive session (__main__ has no file), so "
            f"{workers} cannot import it; define it in a module file and import it from there"
        )


def _is_main_test(test: ast.expr) -> bool:
    """``__name__ == "__main__"`` (either way round)."""
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return False
    sides = [test.left, test.comparators[0]]
    return (any(isinstance(s, ast.Name) and s.id == "__name__" for s in sides)
            and any(isinstance(s, ast.Constant) and s.value == "__main__" for s in sides))


def unguarded_main_line() -> tuple[str, int] | None:
    """(path, line) of the main script's top-level statement that led here, when it is not under
    ``if __name__ == "__main__":``; None when it is, or when there is no main script (interactive, ``-c``)."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if not path or not os.path.exists(path):
        return None
    frame = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "<module>" and os.path.exists(code.co_filename) and os.path.samefile(code.co_filename, path):
            break
        frame = frame.f_back
    if frame is None:
        return None
    line = frame.f_lineno
    try:
        with open(path, encoding="utf-8") as handle:
            tree = ast.parse(handle.read(), filename=path)
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_main_test(node.test) and node.lineno <= line <= (node.end_lineno or line):
            return None
    return path, line


def _explain(where: str, workers: str, path: str | None = None, line: int | None = None) -> str:
    place = f"{os.path.basename(path)} line {line} " if path else "the main script "
    return (f"{where}: {place}starts {workers} from the top level of the script, outside "
            '`if __name__ == "__main__":`. Worker processes are started with the spawn method and begin by '
            "importing the main script again, so each of them would start the study again. "
            f"Put the code that runs the study under the guard:\n{GUARD_EXAMPLE}")


def in_spawned_bootstrap() -> bool:
    """Whether this process is a spawned worker still importing its parent's main script."""
    import multiprocessing

    return bool(getattr(multiprocessing.current_process(), "_inheriting", False))


def check_main_guard(where: str, workers: str) -> None:
    """Raise `SpawnError` when starting spawned ``workers`` now would re-run the main script in each of them."""
    if in_spawned_bootstrap():
        raise SpawnError(_explain(where, workers))
    found = unguarded_main_line()
    if found is not None:
        raise SpawnError(_explain(where, workers, *found))


def worker_context():
    """The multiprocessing context of kerneldsl's own worker processes (process isolation, its process pools).

    ``forkserver`` where the platform has it: one server process imports the main script and kerneldsl (torch,
    gpytorch, botorch: seconds) once, and every worker, including each one that replaces a killed worker, is a
    fork of it that starts in milliseconds with nothing else running in it. ``spawn`` elsewhere (Windows):
    each worker imports everything itself. Both need the objective picklable and the script guarded."""
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["__main__", "kerneldsl.loop.executors"])
    return context
