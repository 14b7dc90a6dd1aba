"""kerneldsl: a kernel language for hands-on Bayesian optimisation."""

from importlib import metadata as _metadata


def _package_version() -> str:
    """The installed distribution's version (``0+unknown`` for a source tree that was never installed)."""
    try:
        return _metadata.version("kerneldsl")
    except _metadata.PackageNotFoundError:
        return "0+unknown"


__version__ = _package_version()

from .api import build, compile
from .compiler.check import KernelWarning
from .compiler.errors import KernelError, KernelNameError, KernelSyntaxError
from .compiler.ir import KernelIR
from .compiler.lower import compile_ir
from .compiler.options import KernelOptions
from .parameters import Choice, ConfigError, Int, Scalar, SpaceError
from .sampling import SamplingError, initial_design, sample
from .space import LinearConstraint, Space
from .sweep import Sweep, SweepError, load_sweep
from .transforms import Add, Chain, FeatureTransform, Log, Mean, Multiply, OneHot, PassThrough, RelativeToMean, Subtract
from .journal import JournalError
from .results import TickTockResult
from .synthetic import SyntheticTask
from .tick_tock import tick_tock

__all__ = ["__version__", "compile", "build", "compile_ir", "KernelIR", "KernelOptions",
           "KernelError", "KernelNameError", "KernelSyntaxError", "KernelWarning",
           "Space", "Scalar", "Int", "Choice", "LinearConstraint", "SpaceError", "ConfigError",
           "sample", "initial_design", "SamplingError", "load_sweep", "Sweep", "SweepError",
           "Chain", "FeatureTransform", "Log", "Add", "Subtract", "Multiply", "Mean", "RelativeToMean",
           "OneHot", "PassThrough",
           "tick_tock", "TickTockResult", "SyntheticTask", "JournalError"]
