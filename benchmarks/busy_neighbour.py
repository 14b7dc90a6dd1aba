"""Proposals next to a busy neighbour: does another process on the machine multiply proposal time?

Issue 26 measured the same seeded 20-trial study at 32.5 s on a quiet 2-core machine and 515 s
with one other busy process, because torch's default thread count (one per core) made every tiny
operation of a proposal wait for a core the neighbour held. The study now proposes on one torch
thread for models of up to 1000 trials (`AcquisitionOptions.threads`). This benchmark runs the same
study, each run in a fresh process, in four settings:

* ``quiet``: nothing else runs;
* ``busy``: a neighbour process multiplies 600 x 600 matrices in a loop with torch's default
  threads (one per core) for as long as the study runs;

each with ``threads=None`` (the study's default: one thread up to 1000 points) and
``threads=<cores>`` (torch's default before, what the study did in issue 26). Reported: wall seconds
of the whole study and the median model seconds (fit + acquisition) per model-based proposal, and
the ratio busy / quiet per thread setting (the issue's 15x).

    python benchmarks/busy_neighbour.py --trials 20 --repeats 1

Check ``uptime`` first: "quiet" means quiet.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap
import time

STUDY = textwrap.dedent("""
    import json, statistics, sys, time
    import kerneldsl as kd

    trials, threads, seed = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    task = kd.SyntheticTask()
    options = {} if threads == "default" else {"threads": int(threads)}
    study = kd.Study(task.space(), task.max_cost, None, n_init=8, n_trials=trials, seed=seed, **options)
    start = time.perf_counter()
    study.optimize(lambda c: {"loss": task.loss(c), "cost": task.cost(c)}, progress=False)
    wall = time.perf_counter() - start
    model = [t.timings.get("fit", 0.0) + t.timings.get("acquisition", 0.0) for t in study.trials if t.phase.value != "init"]
    print(json.dumps({"wall": wall, "model_median": statistics.median(model), "best": study.best.loss}))
""")

NEIGHBOUR = textwrap.dedent("""
    import torch
    a = torch.randn(600, 600)
    while True:
        a = torch.tanh(a @ a.T / 600.0)
""")


def run(trials: int, threads: str, seed: int, busy: bool, limit: float) -> dict:
    neighbour = subprocess.Popen([sys.executable, "-c", NEIGHBOUR]) if busy else None
    try:
        if neighbour is not None:
            time.sleep(2.0)  # let it import torch and start multiplying
        start = time.perf_counter()
        try:
            out = subprocess.run([sys.executable, "-c", STUDY, str(trials), threads, str(seed)], capture_output=True,
                                 text=True, check=True, timeout=limit)
        except subprocess.TimeoutExpired:  # the 515 s: not waited for in full
            return {"wall": time.perf_counter() - start, "model_median": float("nan"), "best": None, "cut": True}
        return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=1, help="seeds 0..R-1 per setting")
    parser.add_argument("--out", default=None, help="append one JSON line per run")
    parser.add_argument("--limit", type=float, default=600.0, help="seconds after which a run is cut (reported '>')")
    args = parser.parse_args()
    cores = str(os.cpu_count() or 1)
    rows: dict[tuple[str, str], list[dict]] = {}
    for threads in ("default", cores):
        for busy in (False, True):
            for seed in range(args.repeats):
                result = run(args.trials, threads, seed, busy, args.limit)
                result.update(threads=threads, busy=busy, seed=seed, trials=args.trials, load=os.getloadavg()[0])
                print(json.dumps(result), flush=True)
                if args.out:
                    with open(args.out, "a") as handle:
                        handle.write(json.dumps(result) + "\n")
                rows.setdefault((threads, "busy" if busy else "quiet"), []).append(result)
    print(f"\n| threads | neighbour | wall s | model s / proposal (median) | busy / quiet (wall) |")
    print("|---|---|---:|---:|---:|")
    for threads in ("default", cores):
        quiet = statistics.median(r["wall"] for r in rows[(threads, "quiet")])
        for state in ("quiet", "busy"):
            runs = rows[(threads, state)]
            wall = statistics.median(r["wall"] for r in runs)
            model = statistics.median(r["model_median"] for r in runs)
            label = "default (1 up to 1000 points)" if threads == "default" else f"{threads} (torch's default)"
            cut = ">" if any(r.get("cut") for r in runs) else ""
            print(f"| {label} | {state} | {cut}{wall:.1f} | {model:.2f} | {cut}{wall / quiet:.1f}x |")


if __name__ == "__main__":
    main()
