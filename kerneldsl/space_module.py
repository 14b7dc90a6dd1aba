"""Load a user's search-space module: a Python file (or importable module) exposing ``space`` and ``feature_chain``.

This is how the command line learns the space of a sweep file and the features a kernel
source refers to, e.g. ``examples/mnist_space.py`` for the MNIST sweep.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from .space.parameters import SpaceError
from .space.space import Space
from .space.transforms import Chain


@dataclass(frozen=True)
class SpaceModule:
    """What the module provides: the space of the sweep and the chain from search points to features."""

    space: Space
    feature_chain: Chain | None
    """The module's ``feature_chain``; None only when loaded with ``require_chain=False`` and it has none."""
    module: ModuleType


def load_space_module(spec: str | Path, require_chain: bool = True) -> SpaceModule:
    """Import ``spec`` (a ``.py`` path or a dotted module name) and check its ``space`` and ``feature_chain``.

    ``require_chain=False`` accepts a module without ``feature_chain`` (its ``feature_chain`` is then None).
    """
    module = _import(spec)
    space = getattr(module, "space", None)
    chain = getattr(module, "feature_chain", None)
    if not isinstance(space, Space):
        raise SpaceError(f"space module {spec}: needs a top-level `space = kerneldsl.Space([...])`, found {space!r}")
    if chain is None and not require_chain:
        return SpaceModule(space, None, module)
    if not isinstance(chain, Chain):
        raise SpaceError(f"space module {spec}: needs a top-level `feature_chain = kerneldsl.Chain(space, [...])`, "
                         f"found {chain!r}")
    if chain.space is not space:
        raise SpaceError(f"space module {spec}: feature_chain was built on a different Space than `space`")
    return SpaceModule(space, chain, module)


def _import(spec: str | Path) -> ModuleType:
    text = str(spec)
    path = Path(text)
    if text.endswith(".py") or path.exists():
        if not path.is_file():
            raise SpaceError(f"space module file {text!r} does not exist")
        name = f"_kerneldsl_space_{abs(hash(str(path.resolve())))}"
        loader_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[name] = module  # dataclasses and pickling look modules up by name
        try:
            loader_spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[name]
            if isinstance(exc, SpaceError):
                raise
            raise SpaceError(f"space module {text!r} failed to import: {type(exc).__name__}: {exc}") from exc
        return module
    try:
        return importlib.import_module(text)
    except ImportError as exc:
        raise SpaceError(f"cannot import space module {text!r}: {exc}") from exc
