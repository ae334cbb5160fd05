"""Where each form of effective movement would stop a step, and what the stop costs.

Reads runs that trained every step to its cap with every candidate form logged
(``benchmarks.accuracy.compare --methods profl-capped``: ``method.em.record=true``, round log
``em_candidates``; forms in :data:`profl_strategy.methods.profl.movement.CANDIDATES`). For each
form, threshold and patience it finds, per step, the first round the rule would
have ended the step (not before ``min-rounds-per-step``, nor before ``--min-shares``
of the step's rounds: ``em-min-share``), and compares the step's
validation accuracy there with its accuracy at the cap. The run's last step is left
out: effective movement never ends it when the run has a round budget.

Its table chooses a stop rule, so it reads the server's validation split
(:data:`~benchmarks.accuracy.tables.SELECT_ON`), never the test split. Runs from before
the validation split (issue 39) have test accuracy only: ``--test-scores`` re-derives
the tables made from them then, and is not for choosing a setting.

Accuracy "at" a round is the mean of the step's last two evaluations up to that
round (one reading of 4 non-IID nodes' average is noisy); a step's evaluations
score its own sub-model (block and output module), so they compare within a step.

Usage::

    python -m benchmarks.accuracy.em_stops <compare folder of capped runs> \
        [--thresholds 0.3,0.4,0.5,0.6] [--patience 2] [--min-shares 0,0.5,0.75]
    python -m benchmarks.accuracy.em_stops benchmarks/results/fmnist_long_ablations \
        --thresholds 0.1,0.2,0.3,0.4,0.5 --test-scores     # its table, made before the split
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
from benchmarks.accuracy.tables import SELECT_ON
from profl_strategy.engine.step import STAGE_GROW, Step
from profl_strategy.methods.profl.movement import CANDIDATES

TEST_SCORE = "accuracy"  # a round's test accuracy: --test-scores only


@dataclass(frozen=True)
class StepTrace:
    """One step of a capped run: its rounds' candidate EMs and evaluations (``score``:
    the round log's entry they are read from)."""

    run: str
    step: str
    rounds: list[dict[str, Any]]
    score: str = SELECT_ON

    def accuracy_at(self, index: int) -> float | None:
        """Mean of the last two evaluations in rounds ``0 .. index`` of the step."""
        accs = [r[self.score] for r in self.rounds[: index + 1] if self.score in r]
        if not accs:  # no evaluation yet: the step's first one
            accs = [r[self.score] for r in self.rounds if self.score in r][:1]
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


def load_traces(folders: Sequence[Path], score: str = SELECT_ON) -> tuple[list[StepTrace], int]:
    """Every step but the last of every run that logged candidate forms and ``score``."""
    traces, min_rounds = [], 1
    for folder in folders:
        for path in results_paths(folder):
            data = read_results(path)
            rounds = [r for r in data["rounds"] if "em_candidates" in r]
            if not any(score in r for r in rounds):
                continue
            method = data["config"].get("method", {})
            min_rounds = int(method.get("min_rounds_per_step", min_rounds))
            steps = [
                (Step(*key), list(group))
                for key, group in groupby(rounds, key=lambda r: (r["stage"], r["block"]))
            ]
            traces += [
                StepTrace(path.parent.name, str(step), group, score)
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
    p.add_argument(
        "--test-scores",
        action="store_true",
        help="read test accuracy: only to re-derive a table of runs from before the validation "
        "split, never to choose a setting",
    )
    args = p.parse_args(argv)
    score = TEST_SCORE if args.test_scores else SELECT_ON
    traces, min_rounds = load_traces(args.folders, score)
    folders = [str(f) for f in args.folders]
    if not traces and not args.test_scores and load_traces(args.folders, TEST_SCORE)[0]:
        raise SystemExit(
            f"the capped runs in {folders} have no validation accuracy (they predate the "
            "validation split): rerun them to choose a rule, or pass --test-scores to "
            "re-derive a table made from them before"
        )
    if not traces:
        raise SystemExit(
            f"no run in {folders} logged candidate EM forms: run "
            "benchmarks.accuracy.compare with --methods profl-capped first"
        )
    thresholds = [float(v) for v in args.thresholds.split(",")]
    runs = sorted({t.run for t in traces})
    print(
        f"{len(traces)} steps of {len(runs)} runs, min-rounds-per-step {min_rounds}, "
        f"scored on {'test' if args.test_scores else 'validation'} accuracy"
    )
    shares = [float(v) for v in args.min_shares.split(",")]
    print(table(sweep(traces, thresholds, args.patience, min_rounds, shares), args.patience))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
