"""Errors for bad kernel sources: every one names the line and column and shows a caret."""

from __future__ import annotations

import difflib
from typing import Iterable


class KernelError(ValueError):
    """A kernel source, feature list or option that cannot be compiled.

    ``line`` and ``column`` are 1-based (``None`` when the problem has no place
    in the source, e.g. a bad ``groups=`` argument); ``str(err)`` holds the full
    message with the source line and a caret.
    """

    def __init__(self, message: str, *, source: str | None = None,
                 line: int | None = None, column: int | None = None,
                 hint: str | None = None):
        self.message = message
        self.line = line
        self.column = column
        self.hint = hint
        super().__init__(format_message(message, source, line, column, hint))


class KernelSyntaxError(KernelError):
    """The source does not parse."""


class KernelNameError(KernelError):
    """An unknown group, feature, definition or function name."""


def format_message(message: str, source: str | None, line: int | None,
                   column: int | None, hint: str | None = None) -> str:
    """``line L, column C: message`` then the source line and a caret under the spot."""
    parts = []
    if line is not None and column is not None:
        parts.append(f"line {line}, column {column}: {message}")
        if source is not None:
            lines = source.splitlines() or [""]
            if 1 <= line <= len(lines):
                text = lines[line - 1].expandtabs(1)
                parts.append(f"    {text}")
                parts.append("    " + " " * max(column - 1, 0) + "^")
    else:
        parts.append(message)
    if hint:
        parts.append(hint)
    return "\n".join(parts)


def closest(name: str, known: Iterable[str]) -> str | None:
    """The known name most similar to ``name``, if any is close enough to suggest."""
    matches = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    if not matches:
        lowered = {k.lower(): k for k in known}
        matches = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
        matches = [lowered[m] for m in matches]
    return matches[0] if matches else None


def did_you_mean(name: str, known: Iterable[str]) -> str | None:
    """A 'did you mean ...?' hint, or None."""
    match = closest(name, known)
    return f"did you mean '{match}'?" if match else None
