"""Judging models on data: sweeps of past trials, and leave-one-out cross-validation."""

from .cv import CrossValidationError, CVMetrics, CVResult, cross_validate, kernel_model, loo_cv
from .compare import Candidate
from .sweep import Sweep, SweepError, load_sweep, load_trials

__all__ = ["Sweep", "SweepError", "load_sweep", "cross_validate", "loo_cv", "kernel_model", "CVResult", "CVMetrics",
           "CrossValidationError", "Candidate", "load_trials"]
