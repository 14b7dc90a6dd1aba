"""Benchmark tasks: objectives over real search spaces that answer instantly (`SurrogateTask`)."""

from .surrogate import HeldOutError, NoiseLevel, SurrogateError, SurrogateOptions, SurrogateOutcome, SurrogateTask

__all__ = ["SurrogateTask", "SurrogateOptions", "SurrogateOutcome", "HeldOutError", "NoiseLevel", "SurrogateError"]
