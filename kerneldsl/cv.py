"""Compatibility: ``kerneldsl.cv`` moved to ``kerneldsl.evaluation.cv`` (import from there, or from ``kerneldsl``)."""

from .evaluation.cv import *  # noqa: F401,F403
from .evaluation.cv import CVMetrics, CVResult, CrossValidationError, FoldPrediction, Z95  # noqa: F401
