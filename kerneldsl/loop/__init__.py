"""The optimisation loop: trials, the study (ask/tell), phases and acquisition, trial runners, journal, results."""

from .budget import Budget
from .journal import JournalError, read_journal
from .results import TickTockResult
from .study import Study, StudyError
from .stopping import CostStopping
from .synthetic import SyntheticTask
from .tick_tock import tick_tock
from .trial import Phase, Report, Trial, TrialState

__all__ = ["Study", "StudyError", "Trial", "TrialState", "Phase", "tick_tock", "TickTockResult", "SyntheticTask",
           "JournalError", "read_journal", "CostStopping", "Budget", "Report"]
