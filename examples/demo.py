"""The main demo (`make demo`): tick-tock on a real task, a PyTorch MLP on scikit-learn's digits.

Runs `kd.tick_tock` with the hands-on kernels of `digits_task` for a few minutes
on one CPU core, prints progress and the summary table, and writes the plot and
the journal (default: ``out/tick_tock_digits.png`` and ``.jsonl``). The budget
``max_cost`` defaults to 1.5x the measured training time of a reference config
on this machine, so that roughly half of the search space fits it.
``--resume`` continues an interrupted run from its journal.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import kerneldsl as kd  # noqa: E402
from digits_task import COST_KERNEL, LOSS_KERNEL, default_max_cost, make_feature_chain, make_space, train  # noqa: E402
from kerneldsl.loop.journal import read_journal  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-init", type=int, default=10, help="initial Sobol trials (default 10)")
    parser.add_argument("--n-iter", type=int, default=30, help="model-based tick/tock trials (default 30)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-cost", type=float, default=None,
                        help="training-seconds budget (default: 1.5x the reference config's time here)")
    parser.add_argument("--timeout", type=float, default=None, help="per-trial timeout in seconds (runs trials in a worker process)")
    parser.add_argument("--backend", default="auto", help="kernel backend for kd.compile (default auto)")
    parser.add_argument("--out", default="out", help="folder for the plot and the journal (default out/)")
    parser.add_argument("--resume", action="store_true", help="continue the run recorded in the journal")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)  # one core for training and models: timings stay comparable on a shared machine
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    journal, plot = out / "tick_tock_digits.jsonl", out / "tick_tock_digits.png"
    if args.resume and journal.exists():
        max_cost = read_journal(journal)[0]["max_cost"]
        print(f"resuming {journal} (max_cost {max_cost:.3g} s)")
    else:
        journal.unlink(missing_ok=True)
        max_cost = args.max_cost
        if max_cost is None:
            max_cost = default_max_cost()

    space = make_space()
    chain = make_feature_chain(space)
    start = time.perf_counter()
    result = kd.tick_tock(train, space, max_cost, n_init=args.n_init, n_iter=args.n_iter, seed=args.seed,
                          journal=str(journal), loss_kernel=LOSS_KERNEL, cost_kernel=COST_KERNEL, feature_chain=chain,
                          kernel_options={"backend": args.backend}, timeout=args.timeout, plot=str(plot))
    elapsed = time.perf_counter() - start
    best = result.best
    if best is not None:
        print(f"best validation accuracy within budget: {best.outputs.get('accuracy', float('nan')):.4f}")
    spent = sum(t.cost or 0.0 for t in result.trials)
    print(f"wall time {elapsed:.0f} s (training {spent:.0f} s); plot: {plot}; journal: {journal}")


if __name__ == "__main__":
    main()
