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
from .evaluation import CrossValidationError, Sweep, SweepError, cross_validate, kernel_model, load_sweep, loo_cv
from .loop import (AcquisitionOptions, BaseProposer, Budget, CostStopping, History, JournalBusy, JournalError, ModelOptions, Phase,
                   Proposal, ProposalRequest, RandomProposer, ReadOnlyStudy, Report, Schedule, StartWeights, Study,
                   StudyError, SyntheticTask, TickTockProposer, TickTockResult, Trial, TrialState, tick_tock)
from .model import KernelGP, default_feature_chain
from .space import (Add, Chain, Choice, ConfigError, FeatureTransform, Int, LinearConstraint, Log, Mean, Multiply,
                    OneHot, PassThrough, RelativeToMean, SamplingError, Scalar, Space, SpaceError, Subtract,
                    initial_design, sample)
from .fitting import fit_map
from .evaluation.structure import plot_structure
from .tasks import SurrogateTask

__all__ = ["__version__", "compile", "build", "compile_ir", "KernelIR", "KernelOptions",
           "KernelError", "KernelNameError", "KernelSyntaxError", "KernelWarning",
           "Space", "Scalar", "Int", "Choice", "LinearConstraint", "SpaceError", "ConfigError",
           "sample", "initial_design", "SamplingError", "load_sweep", "Sweep", "SweepError",
           "cross_validate", "loo_cv", "kernel_model", "CrossValidationError", "KernelGP", "default_feature_chain", "fit_map", "plot_structure",
           "Chain", "FeatureTransform", "Log", "Add", "Subtract", "Multiply", "Mean", "RelativeToMean",
           "OneHot", "PassThrough",
           "Study", "StudyError", "Trial", "TrialState", "Phase", "tick_tock", "TickTockResult", "SyntheticTask",
           "JournalError", "JournalBusy", "CostStopping", "Budget", "Report", "Schedule", "ModelOptions", "AcquisitionOptions",
           "BaseProposer", "ProposalRequest", "Proposal", "RandomProposer", "TickTockProposer", "History",
           "ReadOnlyStudy", "SurrogateTask", "StartWeights"]
