"""Where a run's CPU time goes: training, estimating, evaluating, splitting data, the rest.

Runs the real ServerApp and ClientApp in this process (``server_app.inprocess``, one
torch thread, nodes one after another) under cProfile with a CPU-time clock, so the
shares hold on a busy machine too, and prints one table::

    python -m benchmarks.speed.round_profile --rounds 5 --run-config "data-dir='../shared/data'"

What ``flwr run`` adds on top (Ray's start-up, messaging) is not in it: compare the
total with the run's wall time (docs/benchmarks.md, "Where a round's time goes").
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time

import torch
from flwr.common.config import parse_config_args

from server_app.inprocess import simulate

# (row, function as pstats names it: file suffix, function name). The first match wins.
PARTS = (
    ("training calls (train_with_plan)", "client_app/step.py", "fit_step"),
    ("  of which: memory estimate", "profl_strategy/memory/plans/memory.py", "choose_plan"),
    ("test and validation scoring", "profl_strategy/task/evaluate.py", "__call__"),
    ("partition check (server)", "profl_strategy/task/partition_check.py", "check_partitions"),
    ("data split (nodes)", "profl_strategy/task/dataset.py", "local_partitioner"),
)


def cumulative(stats: pstats.Stats, suffix: str, name: str) -> float:
    """Cumulative seconds of every function ``name`` defined in a file ending in ``suffix``."""
    return sum(
        row[3]
        for (file, _, func), row in stats.stats.items()  # type: ignore[attr-defined]
        if func == name and file.endswith(suffix)
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--nodes", type=int, default=20)
    p.add_argument("--run-config", default="", help="as for flwr run --run-config")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    config = {"preset": "laptop", "checkpoint-every": 0, "outputs-dir": "/tmp/round_profile"}
    config |= parse_config_args([args.run_config]) if args.run_config else {}
    config["num-server-rounds"] = args.rounds
    profile = cProfile.Profile(time.process_time)
    wall = time.time()
    profile.enable()
    summary = simulate(config, args.nodes)
    profile.disable()
    wall = time.time() - wall
    stats = pstats.Stats(profile)
    total = stats.total_tt  # type: ignore[attr-defined]
    rows = [(label, cumulative(stats, suffix, name)) for label, suffix, name in PARTS]
    print(f"\n{args.rounds} rounds, {args.nodes} nodes, config {config}")
    print(f"final accuracy {summary['final_accuracy']:.4f}; wall {wall:.1f} s\n")
    print("| part | CPU s | per round | share |\n|---|---|---|---|")
    for label, seconds in (*rows, ("everything", total)):
        print(f"| {label} | {seconds:.1f} | {seconds / args.rounds:.2f} | {seconds / total:.0%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
