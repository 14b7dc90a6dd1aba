"""Progress of long runs: a tqdm bar on a terminal, one readable line per finished step in a log file."""

import io
import os
import re
import sys

from kerneldsl.progress import Progress


def test_a_log_gets_one_line_per_finished_step():
    log = io.StringIO()  # not a terminal
    with Progress(10, "cv", "fold", file=log) as progress:
        progress.running("a n=5 seed=0")  # nothing in a log
        progress.update(3)
        progress.finished("a n=5 seed=0 (5 folds)", units=2)
        progress.finished("b n=5 seed=0 (5 folds)", units=5)
    lines = log.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in log.getvalue()
    assert re.fullmatch(r"cv: a n=5 seed=0 \(5 folds\) done; 5/10 folds, \d+\.\d s, about \d+\.\d s left", lines[0])
    assert re.fullmatch(r"cv: b n=5 seed=0 \(5 folds\) done; 10/10 folds, \d+\.\d s", lines[1])


def test_a_terminal_gets_a_bar_even_when_it_reports_no_size(monkeypatch):
    """A fresh pseudo-terminal reports 0 x 0, as some do in practice: tqdm alone would draw an empty line."""
    master, slave = os.openpty()
    assert os.get_terminal_size(slave) == (0, 0)
    terminal = os.fdopen(slave, "w")
    monkeypatch.setattr(sys, "stderr", terminal)  # tqdm measures only sys.stderr and sys.stdout
    with Progress(4, "bench", "step") as progress:
        assert progress.interactive
        progress.running("timing")
        progress.finished("repeat 1/4", units=4)
    terminal.flush()
    os.set_blocking(master, False)
    chunks = []
    while True:  # everything written so far; a pty may hand it over in pieces
        try:
            chunks.append(os.read(master, 65536))
        except BlockingIOError:
            break
    output = b"".join(chunks).decode()
    terminal.close()
    os.close(master)
    last = output.replace("\n", "\r").strip("\r").split("\r")[-1].strip()
    assert last.startswith("bench: 100%") and "4/4" in last and "timing" in last, repr(output)


def test_disabled_progress_prints_nothing():
    log = io.StringIO()
    with Progress(2, "cv", "fold", file=log, enabled=False) as progress:
        progress.finished("x", units=2)
    assert log.getvalue() == ""


def test_a_study_in_a_log_file_writes_one_line_per_trial(capsys):
    import kerneldsl as kd

    space = kd.Space([kd.Scalar("x", 0.0, 1.0)])
    study = kd.Study(space, 2.0, None, n_init=3, n_trials=3, seed=0)
    study.optimize(lambda c: {"loss": 0.1 + c["x"], "cost": 1.0 + 2 * c["x"]}, progress=True)
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert "\r" not in err and len(lines) == 3, err
    for k, (line, trial) in enumerate(zip(lines, study.trials), 1):
        assert line.startswith(f"study: trial {trial.id} (init, loss {trial.loss:.4g}, cost {trial.cost:.3g}; best loss ")
        assert f"done; {k}/3 trials, " in line
