"""Search spaces: parameters with conditions, linear constraints, rounding, sampling and feature transforms."""

from .parameters import Choice, ConfigError, Int, Parameter, Scalar, SpaceError
from .constraints import LinearConstraint
from .protocol import SearchSpace
from .combinations import Combination, choice_combinations
from .sampling import SamplingError, balanced_sample, initial_design, sample
from .space import Space
from .transforms import (Add, Chain, FeatureTransform, Log, Mean, Multiply, OneHot, PassThrough, RelativeToMean,
                         Subtract)

__all__ = ["Space", "SearchSpace", "Scalar", "Int", "Choice", "Parameter", "LinearConstraint", "SpaceError",
           "ConfigError", "sample", "balanced_sample", "initial_design", "SamplingError", "Combination",
           "choice_combinations", "Chain", "FeatureTransform", "Log", "Add", "Subtract", "Multiply", "Mean",
           "RelativeToMean", "OneHot", "PassThrough"]
