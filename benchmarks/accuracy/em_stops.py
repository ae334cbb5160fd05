"""Where each form of effective movement would stop a step, and what the stop costs.

Reads runs that trained every step to its cap with every candidate form logged
(``benchmarks.accuracy.compare --methods profl-capped``: ``method.em.record=true``, round log
``em_candidates``; forms in :data:`profl_strategy.methods.profl.movement.CANDIDATES`). For each
form, threshold and patience it finds, per step, the first round the rule would
have ended the step (not before ``min-rounds-per-step``, nor before ``--min-shares``
of the step's rounds: ``em-min-share``), and compares the step's
test accuracy there with its accuracy at the cap. The run's last step is left
out: effective movement never ends it when the run has a round budget.

Accuracy "at" a round is the mean of the step's last two evaluations up to that
round (one reading of 4 non-IID nodes' average is noisy); a step's evaluations
score its own sub-model (block and output module), so they compare within a step.

Usage::

    python -m benchmarks.accuracy.em_stops benchmarks/results/fmnist_long_ablations \
        [--thresholds 0.3,0.4,0.5,0.6] [--patience 2] [--min-shares 0,0.5,0.75]
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby, product
from pathlib import Path
from statistics import mean
from typing import Any

from benchmarks.accuracy.run_files import read_results, results_paths
from profl_strategy.engine.step import STAGE_GROW, Step
from profl_strategy.methods.profl.movement import CANDIDATES


@dataclass(frozen=True)
class StepTrace:
    """One step of a capped run: its rounds' candidate EMs and evaluations."""

    run: str
    step: str
    rounds: list[dict[str, Any]]

    def accuracy_at(self, index: int) -> float | None:
        """Mean of the last two evaluations in rounds ``0 .. index`` of the step."""
        accs = [r["accuracy"] for r in self.rounds[: index + 1] if "accuracy" in r]
        if not accs:  # no evaluation yet: the step's first one
            accs = [r["accuracy"] for r in self.rounds if "accuracy" in r][:1]
        return mean(accs[-2:]) if accs else None

    def stop_index(self, form: str, threshold: float, patience: int, min_rounds: int) -> int:
        """Index of the round the rule ends the step at (the last round if never)."""
        below = 0
        for i, r in enumerate(self.rounds):
            value = (r.get("em_candidates") or {}).get(form)
            below = below + 1 if value is not None and value < threshold else 0
            if below >= patience and i + 1 >= min_rounds:
                return i
        return len(self.rounds) - 1


def load_traces(folders: Sequence[Path]) -> tuple[list[StepTrace], int]:
    """Every step but the last of every run that logged candidate forms."""
    traces, min_rounds = [], 1
    for folder in folders:
        for path in results_paths(folder):
            data = read_results(path)
            rounds = [r for r in data["rounds"] if "em_candidates" in r]
            if not rounds:
                continue
            method = data["config"].get("method", {})
            min_rounds = int(method.get("min_rounds_per_step", min_rounds))
            steps = [
                (Step(*key), list(group))
                for key, group in groupby(rounds, key=lambda r: (r["stage"], r["block"]))
            ]
            traces += [
                StepTrace(path.parent.name, str(step), group)
                for step, group in steps[:-1]
                if step.stage == STAGE_GROW
            ]
    return traces, min_rounds


def sweep(
    traces: list[StepTrace],
    thresholds: Sequence[float],
    patience: int,
    min_rounds: int,
    min_shares: Sequence[float] = (0.0,),
) -> list[dict[str, Any]]:
    """One row per (form, min share, threshold): stops, rounds saved, cost in points."""
    rows = []
    for form, share, tau in product(CANDIDATES, min_shares, thresholds):
        costs, saved, early = [], [], 0
        for t in traces:
            earliest = max(min_rounds, math.ceil(share * len(t.rounds)))
            i, last = t.stop_index(form, tau, patience, earliest), len(t.rounds) - 1
            at_stop, at_cap = t.accuracy_at(i), t.accuracy_at(last)
            if at_stop is None or at_cap is None:
                continue
            early += i < last
            saved.append(last - i)
            costs.append(100 * (at_cap - at_stop))
        if costs:
            rows.append({"form": form, "min_share": share, "threshold": tau,
                         "steps": len(costs), "stopped_early": early,
                         "rounds_saved": mean(saved), "cost_mean": mean(costs),
                         "cost_max": max(costs)})  # fmt: skip
    return rows


def table(rows: list[dict[str, Any]], patience: int) -> str:
    """Markdown table of :func:`sweep`'s rows."""
    lines = [
        f"| EM form | min share | tau (patience {patience}) | steps stopped early "
        "| mean rounds saved per step | mean cost (points) | worst cost (points) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['form']} | {r['min_share']:g} | {r['threshold']:g} | "
            f"{r['stopped_early']}/{r['steps']} | {r['rounds_saved']:.1f} | "
            f"{r['cost_mean']:+.2f} | {r['cost_max']:+.2f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folders", nargs="+", type=Path, help="compare result folders")
    p.add_argument("--thresholds", default="0.3,0.4,0.5,0.6,0.7")
    p.add_argument("--patience", type=int, default=2)
    p.add_argument(
        "--min-shares", default="0", help="em-min-share values: no stop before this share of a step"
    )
    args = p.parse_args(argv)
    traces, min_rounds = load_traces(args.folders)
    if not traces:
        raise SystemExit(
            f"no run in {[str(f) for f in args.folders]} logged candidate EM forms: run "
            "benchmarks.accuracy.compare with --methods profl-capped first"
        )
    thresholds = [float(v) for v in args.thresholds.split(",")]
    runs = sorted({t.run for t in traces})
    print(f"{len(traces)} steps of {len(runs)} runs, min-rounds-per-step {min_rounds}")
    shares = [float(v) for v in args.min_shares.split(",")]
    print(table(sweep(traces, thresholds, args.patience, min_rounds, shares), args.patience))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
