"""
Running on many workers
=======================

Trials are expensive and independent; run several at once. ``Study.optimize`` keeps
``n_workers`` trials in flight: whenever one finishes it is told and the next is asked at
once, with the running trials as pending points of the proposal, so workers never get the
same config. The driver (this process) alone asks, tells and writes the journal; workers
only run the objective.

This recipe runs a small study on a process pool and on a Dask cluster, shows what
happens when trials hang and workers die, sketches SLURM and Kubernetes set-ups, and
resumes a study whose driver died.

Workers import the objective by name, so it lives in a module: here ``toy_jobs.py`` beside
this script (``docs/gallery/recipes/toy_jobs.py`` in the repository):

.. literalinclude:: /gallery/recipes/toy_jobs.py
   :language: python
   :start-at: import math

Worker processes start by importing the main script again, so a script that runs a study
on worker processes keeps its top-level code under ``if __name__ == "__main__":`` (the
study checks this, and that the objective can be pickled, before the first trial).
"""

import torch

import kerneldsl as kd
from toy_jobs import flaky_train, train

torch.set_num_threads(1)

# sphinx_gallery_start_ignore
# The docs build hides the models' numerical notes (jitter added to a covariance) that a
# run prints as RuntimeWarnings; a run of this script shows them.
import warnings  # noqa: E402

warnings.filterwarnings("ignore", message="while proposing", category=RuntimeWarning)
warnings.filterwarnings("ignore", message="A not p.d.")
# sphinx_gallery_end_ignore

space = kd.Space([
    kd.Scalar("lr", 1e-4, 1e-1, log=True),
    kd.Int("batch_size", 16, 1024, log=True),
    kd.Int("width", 16, 512, log=True),
])

# %%
# A process pool on one machine
# -----------------------------
#
# ``n_workers=2`` starts a process pool of two workers for the study and stops it at the
# end (any ``concurrent.futures`` executor can be passed as ``executor=`` instead, e.g.
# ``ProcessPoolExecutor(max_workers=2, mp_context=get_context("forkserver"))``).
# ``timeout=`` seconds per trial, counted from the trial's start in its worker: an alarm
# stops the objective, and a worker that does not stop is killed a grace period later.
#
# Here the objective is ``flaky_train``, and two of the initial configs fail on purpose:
# one deadlocks (``batch_size <= 17``), one is killed like an out-of-memory job
# (``width >= 500``). The deadlocked one is failed at its timeout. A trial whose worker dies
# runs again (a worker lost to a preemption costs one rerun), at most 3 times, as Dask does
# with its ``allowed-failures``; this config kills its worker every time, so it is failed
# with the reason after 4 runs. The pool whose worker died is replaced each time, and the
# trials it took down with it run again. The study goes on.

doomed = [{"lr": 1e-3, "batch_size": 16, "width": 64},    # deadlocks: stopped at the timeout
          {"lr": 1e-3, "batch_size": 128, "width": 500}]  # killed: its worker dies

if __name__ == "__main__":
    study = kd.Study(space, max_cost=0.5, initial_configs=doomed, n_init=4, n_trials=10, seed=0,
                     num_restarts=4, raw_samples=64)
    result = study.optimize(flaky_train, n_workers=2, timeout=2.0, progress=False)
    print(result.summary())

# %%
# Every trial with its state and, for the failed ones, the reason:

if __name__ == "__main__":
    frame = result.trials_dataframe()
    print(frame[["number", "phase", "state", "loss", "cost", "error"]].round(3).to_string(index=False))

# %%
# A Dask cluster
# --------------
#
# The same study on a Dask cluster (in a clone of the repository, ``pip install -e ".[dask]"``): pass a
# ``distributed.Client`` (or ``client.get_executor()``) as ``executor``; ``n_workers``
# defaults to the cluster's worker threads. Here a ``LocalCluster`` of two worker processes
# on this machine, which import ``toy_jobs`` from this folder (on a real cluster, install
# the objective's module on the workers, or ship it with ``client.upload_file``). Reports of partial results reach the study
# through a ``distributed.Queue``, and the study's answers (stop or go on) through a
# ``distributed.Variable`` per trial.

from distributed import Client, LocalCluster  # noqa: E402

if __name__ == "__main__":
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        study = kd.Study(space, max_cost=0.5, n_init=4, n_trials=8, seed=1, num_restarts=4, raw_samples=64)
        result = study.optimize(train, executor=client, timeout=10.0, progress=False)
    print(result.summary())
    fig = result.plot(title="8 trials on a 2-worker Dask cluster")

# %%
# On Dask, failures differ from a process pool: Dask cannot stop a running task, so a
# trial past its timeout is failed and its future cancelled while the task runs on in its
# worker thread. A worker that dies is handled as on a process pool: the scheduler reruns its
# tasks on another worker, and a trial is failed (``KilledWorker``) only after Dask's
# ``allowed-failures`` (3, the same number of reruns).
# A thread pool (``isolation="thread"`` or a ``ThreadPoolExecutor``) behaves like Dask for
# timeouts.
#
# Clusters: SLURM and Kubernetes
# ------------------------------
#
# On a real cluster only the client changes. With SLURM, ``dask-jobqueue`` submits the
# workers as batch jobs (not run here: it needs a SLURM installation)::
#
#     from dask_jobqueue import SLURMCluster
#     from distributed import Client
#
#     cluster = SLURMCluster(queue="gpu", account="my-project", cores=4, processes=1, memory="32GB",
#                            walltime="04:00:00", job_extra_directives=["--gres=gpu:1"])
#     cluster.scale(jobs=8)                 # eight workers, one GPU job each
#     with Client(cluster) as client:
#         study = kd.Study(space, max_cost=3600.0, journal="study.jsonl", n_init=16, n_trials=200)
#         study.optimize(train, executor=client, timeout=2 * 3600)
#
# On Kubernetes, the Dask operator's ``KubeCluster`` (``dask-kubernetes``) starts the
# scheduler and workers as pods of an image that has kerneldsl and your objective's module
# installed::
#
#     from dask_kubernetes.operator import KubeCluster
#
#     cluster = KubeCluster(name="tuning", image="registry.example.com/my-training-image:latest",
#                           n_workers=8, resources={"limits": {"nvidia.com/gpu": "1"}})
#     with Client(cluster) as client:
#         study.optimize(train, executor=client, timeout=2 * 3600)
#
# An existing cluster's scheduler is one address away: ``Client("tcp://scheduler:8786")``.
# The driver needs no GPU; run it where it can keep its journal.
#
# Resuming from the journal
# -------------------------
#
# The journal records every ask and every tell, flushed and fsynced, so nothing told is
# lost. If the driver dies, reopen the journal: finished trials are kept, and the trials
# that were running are marked lost and their configs run again first, as new trials.
# Here the driver "dies" with two trials asked and never told:

import os  # noqa: E402

if __name__ == "__main__":
    os.makedirs("out", exist_ok=True)
    if os.path.exists("out/workers.jsonl"):
        os.remove("out/workers.jsonl")          # start afresh each time this page is built
    study = kd.Study(space, max_cost=0.5, journal="out/workers.jsonl", n_init=4, n_trials=8, seed=2,
                     num_restarts=4, raw_samples=64)
    for trial in study.ask(2):
        study.tell(trial, train(trial.config))
    running = study.ask(2)                      # sent to workers ... and the driver dies
    study.close()
    print([(t.id, t.state.value) for t in study.trials])

# %%
# A new driver opens the same journal with the same settings and carries on:

if __name__ == "__main__":
    study = kd.Study(space, max_cost=0.5, journal="out/workers.jsonl", n_init=4, n_trials=8, seed=2,
                     num_restarts=4, raw_samples=64)
    result = study.optimize(train, n_workers=2, progress=False)
    study.close()
    frame = result.trials_dataframe()
    print(frame[["number", "phase", "state", "retry_of", "loss", "cost"]].round(3).to_string(index=False))

# %%
# Trials 2 and 3 are ``lost`` (they teach the models nothing and do not count towards
# ``n_trials``) and trials 4 and 5 ran their configs again (``retry_of``). The same holds
# when the driver is killed at any moment: at most the running trials are run twice.
# ``kd.Study.load("out/workers.jsonl")`` opens a journal for reading (trials, best,
# summary and plot) without the space.
#
# Several drivers on one journal
# ------------------------------
#
# A SLURM array of 4 tasks, each running the same script, is 4 drivers of one study:
#
# .. code-block:: python
#
#     # tune.py, started as `sbatch --array=0-3 run.sh` (each task: python tune.py)
#     with kd.Study(space, max_cost=0.5, journal="/shared/study.jsonl", n_init=8, n_trials=64,
#                   seed=0) as study:
#         study.optimize(train, n_workers=1)
#         print(study.best)
#
# Each append happens under the journal's lock after reading what the others appended, so
# trial ids are unique and each driver proposes with the others' running trials pending.
# Each driver holds a lease (a heartbeat file in ``/shared/study.jsonl.drivers/``): its
# running trials are marked lost and run again by another driver only when it has closed,
# its process is gone, or its heartbeat is older than 30 s (``kerneldsl.loop.journal.LEASE``).
# Every driver returns when all trials have ended, with the same best. The lock is an
# ``flock``: NFS with locking honours it; on a ``nolock`` mount keep the drivers on one
# machine. The drivers must agree on the settings (a different ``seed`` or kernel is a
# ``kd.JournalError`` at open).
