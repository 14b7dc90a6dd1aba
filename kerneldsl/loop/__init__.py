"""The optimisation loop: trials, the study (ask/tell), its options, the proposer protocol, phases and acquisition,
trial runners and pools, the journal, results."""

from .budget import Budget
from .history import History
from .journal import JournalBusy, JournalError, read_journal
from .options import AcquisitionOptions, ModelOptions, Schedule
from .proposals import TickTockProposer
from .proposer import BaseProposer, Proposal, ProposalRequest, RandomProposer
from .restarts import StartWeights
from .results import TickTockResult
from .study import ReadOnlyStudy, Study, StudyError
from .stopping import CostStopping
from .synthetic import SyntheticTask
from .tick_tock import tick_tock
from .trial import Phase, Report, Trial, TrialState

__all__ = ["Study", "StudyError", "ReadOnlyStudy", "Trial", "TrialState", "Phase", "tick_tock", "TickTockResult",
           "SyntheticTask", "JournalError", "JournalBusy", "read_journal", "CostStopping", "Budget", "Report", "Schedule",
           "ModelOptions", "AcquisitionOptions", "BaseProposer", "ProposalRequest", "Proposal", "RandomProposer",
           "TickTockProposer", "History", "StartWeights"]
