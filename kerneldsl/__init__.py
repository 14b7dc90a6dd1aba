"""kerneldsl: a kernel language for hands-on Bayesian optimisation."""

from .api import build, compile
from .compiler.check import KernelWarning
from .compiler.errors import KernelError, KernelNameError, KernelSyntaxError
from .compiler.ir import KernelIR
from .compiler.lower import compile_ir
from .compiler.options import KernelOptions
from .space.parameters import Choice, ConfigError, Int, Scalar, SpaceError
from .space.sampling import SamplingError, initial_design, sample
from .space.space import LinearConstraint, Space
from .evaluation import CrossValidationError, Sweep, SweepError, cross_validate, kernel_model, load_sweep, loo_cv
from .space.transforms import Add, Chain, FeatureTransform, Log, Mean, Multiply, OneHot, PassThrough, RelativeToMean, Subtract
from .loop.journal import JournalError
from .loop.results import TickTockResult
from .loop.synthetic import SyntheticTask
from .model import KernelGP, fit_map
from .structure import plot_structure
from .loop.tick_tock import tick_tock

__all__ = ["compile", "build", "compile_ir", "KernelIR", "KernelOptions",
           "KernelError", "KernelNameError", "KernelSyntaxError", "KernelWarning",
           "Space", "Scalar", "Int", "Choice", "LinearConstraint", "SpaceError", "ConfigError",
           "sample", "initial_design", "SamplingError", "load_sweep", "Sweep", "SweepError",
           "cross_validate", "loo_cv", "kernel_model", "CrossValidationError", "KernelGP", "fit_map", "plot_structure",
           "Chain", "FeatureTransform", "Log", "Add", "Subtract", "Multiply", "Mean", "RelativeToMean",
           "OneHot", "PassThrough",
           "tick_tock", "TickTockResult", "SyntheticTask", "JournalError"]
