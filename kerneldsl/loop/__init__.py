"""The optimisation loop: trials, the study (ask/tell), phases and acquisition, trial runners, journal, results."""

from .journal import JournalError
from .results import TickTockResult
from .synthetic import SyntheticTask
from .tick_tock import tick_tock

__all__ = ["tick_tock", "TickTockResult", "SyntheticTask", "JournalError"]
