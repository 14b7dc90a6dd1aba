"""The ``kerneldsl`` command line: ``explain`` a kernel source, ``cv`` a kernel on sweep data."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .compiler.errors import KernelError
from .compiler.explain import explain


def _explain(args: argparse.Namespace) -> int:
    try:
        source = Path(args.source).read_text()
    except OSError as err:
        print(f"error: cannot read {args.source}: {err.strerror}", file=sys.stderr)
        return 2
    features = [f.strip() for f in args.features.split(",") if f.strip()]
    groups = {}
    for spec in args.group or []:
        name, _, members = spec.partition("=")
        groups[name.strip()] = [m.strip() for m in members.split(",") if m.strip()]
    try:
        print(explain(source, features, groups or None))
    except KernelError as err:
        print(f"{type(err).__name__}: {err}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kerneldsl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("explain", help="print the parsed kernel, its intermediate form, or its error")
    p.add_argument("source", help="kernel-language source file")
    p.add_argument("--features", required=True, help="comma-separated feature names (input columns, in order)")
    p.add_argument("--group", action="append", metavar="NAME=a,b,c", help="a group of features (repeatable)")
    p.set_defaults(run=_explain)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
