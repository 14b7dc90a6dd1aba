"""Errors for bad kernel sources: every one names the line and column and shows a caret."""

from __future__ import annotations

import difflib
import re
from typing import Iterable

NAME_LIMIT = 40
"""Longer names are cut to this many characters (and '…') wherever a message quotes them."""
LINE_LIMIT = 100
"""Longer source lines are shown as this many characters around the caret."""
FAMILY_LIMIT = 12
"""At most this many features of a family (``opt_adam``, ``opt_sgd``, ...) are listed in a hint."""
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LONG_QUOTED = re.compile(r"(?<!\w)'([^'\n]{%d,})'(?!\w)" % (NAME_LIMIT + 1))
"""A quoted name: quotes that are not apostrophes inside words (``Triton's``, ``backend='torch'``)."""


class KernelError(ValueError):
    """A kernel source, feature list or option that cannot be compiled.

    ``line`` and ``column`` are 1-based (``None`` when the problem has no place
    in the source, e.g. a bad ``groups=`` argument); ``str(err)`` holds the full
    message with the source line and a caret.
    """

    def __init__(self, message: str, *, source: str | None = None,
                 line: int | None = None, column: int | None = None,
                 hint: str | None = None):
        message, hint = shorten_quoted(message), hint and shorten_quoted(hint)
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
                text, offset = _window(lines[line - 1].expandtabs(1), max(column - 1, 0))
                parts.append(f"    {text}")
                parts.append("    " + " " * offset + "^")
    else:
        parts.append(message)
    if hint:
        parts.append(hint)
    return "\n".join(parts)


def shorten(name: str, limit: int = NAME_LIMIT) -> str:
    """``name``, cut to ``limit`` characters and '…' when longer."""
    return name if len(name) <= limit else name[:limit] + "…"


def shorten_quoted(text: str) -> str:
    """``text`` with every quoted name longer than ``NAME_LIMIT`` shortened: a message never echoes a huge name."""
    return _LONG_QUOTED.sub(lambda m: f"'{shorten(m.group(1))}'", text)


def _window(text: str, offset: int) -> tuple[str, int]:
    """At most ``LINE_LIMIT`` characters of a source line around ``offset``, and the caret's offset in them."""
    if len(text) <= LINE_LIMIT:
        return text, offset
    start = max(0, min(offset - LINE_LIMIT // 2, len(text) - LINE_LIMIT))
    end = start + LINE_LIMIT
    prefix = "…" if start else ""
    return prefix + text[start:end] + ("…" if end < len(text) else ""), offset - start + len(prefix)


def closest(name: str, known: Iterable[str]) -> str | None:
    """The known name most similar to ``name``, if any is close enough to suggest."""
    known = list(known)
    if len(name) > 3 * max(map(len, known), default=0):
        return None  # similarity is at most 2 * 1/(1 + 3) < cutoff: spare difflib a huge name
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


def feature_name(name: str) -> str:
    """``name`` as written inside ``{...}``: bare when it is an identifier, else in double quotes."""
    return name if _IDENTIFIER.fullmatch(name) else f'"{name}"'


def feature_hint(name: str, features: Iterable[str], known: Iterable[str]) -> str | None:
    """A hint for an unknown name: every feature named ``<name>_...`` (e.g. the one-hot features of a
    choice ``opt``: ``{opt_adam, opt_sgd}``), else the closest of the ``known`` names, or None."""
    family = [f for f in features if name and f.startswith(name + "_")]
    if not family:
        return did_you_mean(name, known)
    shown = ", ".join(feature_name(shorten(f)) for f in family[:FAMILY_LIMIT])
    more = f", … ({len(family)} in all)" if len(family) > FAMILY_LIMIT else ""
    return f"did you mean {{{shown}{more}}}? (every feature named {shorten(name)}_*)"
