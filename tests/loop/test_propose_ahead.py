"""With several workers the driver makes the next proposal while trials run (issue 23): on its proposal
thread, with every running trial pending, so a worker that finishes gets its next config at once. The journal
stays valid, and each trial records how long its worker slot waited for it."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import kerneldsl as kd
from kerneldsl.loop.proposer import BaseProposer


class Recording(BaseProposer):
    """Sobol points (as `RandomProposer`), after 0.05 s of "model work"; notes the thread and the pending trials
    of every call."""

    def __init__(self, space: kd.Space):
        self.inner = kd.RandomProposer(space, seed=0)
        self.calls: list[tuple[str, list[int], list[int]]] = []

    def propose(self, history, requests):
        time.sleep(0.05)
        running = [t.id for t in history.trials if t.state is kd.TrialState.RUNNING]
        self.calls.append((threading.current_thread().name, running, [r.trial_id for r in requests]))
        return self.inner.propose(history, requests)


def test_the_next_proposal_is_made_while_trials_run_with_them_pending(tmp_path):
    space = kd.Space([kd.Scalar("x", 0.0, 1.0), kd.Scalar("y", 0.0, 1.0)])
    proposer = Recording(space)
    path = tmp_path / "study.jsonl"

    def objective(config):
        time.sleep(0.3)
        return {"loss": 0.1 + config["x"], "cost": 1.0 + config["y"]}

    with kd.Study(space, 10.0, path, n_init=2, n_trials=10, seed=0, proposer=proposer) as study:
        with ThreadPoolExecutor(2) as pool:
            study.optimize(objective, executor=pool, n_workers=2, progress=False)

    ahead = [call for call in proposer.calls if call[0].startswith("kerneldsl-propose")]
    assert ahead, "no proposal was made ahead on the proposal thread"
    for _, running, _ in ahead:
        assert running, "a proposal made while trials run sees them as pending"
    assert [t.id for t in study.trials] == list(range(10))
    assert all(t.state is kd.TrialState.OK for t in study.trials)
    assert len({(t.config["x"], t.config["y"]) for t in study.trials}) == 10
    frame = study.trials_dataframe()
    assert (frame["wait_seconds"] >= 0).all() and frame["wait_seconds"].notna().all()
    loaded = kd.Study.load(path)
    assert [(t.id, t.config, t.state, t.loss) for t in loaded.trials] == \
        [(t.id, t.config, t.state, t.loss) for t in study.trials]
