"""Has a method's accuracy curve flattened? Mean accuracy per part of each run.

A convergence-length preset needs a round budget at which FedAvg-full's curve is
flat. One evaluation swings by several points (4 non-IID nodes a round), so this
compares means: each run's evaluations are cut into ``--parts`` equal spans of
rounds, and the gain of the last span over the one before says whether the run
was still climbing. One seed's gain still carries that noise, so the verdict is on
the mean over seeds: under ``--flat`` points is "flat". ``--upto N`` reads only the
first N rounds, which is a run of N rounds for a method whose training does not
depend on the budget (the full-model baselines): would a shorter budget do?

The verdict chooses a round budget, so it reads the validation curve (the server's
validation split, :data:`~benchmarks.accuracy.tables.SELECT_ON`), never the test one.
Runs from before the validation split (issue 39) have test curves only: ``--test-scores``
re-derives the verdicts made from them then, and is not for choosing a budget.

Reads what :mod:`benchmarks.accuracy.tables` reads
(``<out>/runs/<method>-s<seed>/<run>/results.json``).

Usage::

    python -m benchmarks.accuracy.plateau <compare folder> --method fedavg
    python -m benchmarks.accuracy.plateau <compare folder> --method fedavg --parts 8
    python -m benchmarks.accuracy.plateau benchmarks/results/cifar10_plateau --method fedavg \\
        --upto 400 --test-scores                  # its verdict, made before the split
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from statistics import mean
from typing import Any

from benchmarks.accuracy.tables import load_runs


def part_means(
    rounds: Sequence[float], accs: Sequence[float], last: int, parts: int
) -> list[float]:
    """Mean accuracy of the evaluations in each of ``parts`` equal spans of rounds 1..``last``.

    A span without an evaluation is ``nan``.
    """
    spans: list[list[float]] = [[] for _ in range(parts)]
    for r, a in zip(rounds, accs, strict=True):
        if 0 < r <= last:
            spans[min(parts - 1, int((r - 1) * parts // last))].append(a)
    return [mean(s) if s else float("nan") for s in spans]


def plateau_rows(
    out: Path, method: str, parts: int, upto: int = 0, test_scores: bool = False
) -> list[dict[str, Any]]:
    """One row per seed of ``method``: its part means and the last part's gain (points),
    from its validation curve (its test curve with ``test_scores``).

    ``upto > 0`` cuts each run at that round (it must have reached it).
    """
    rows = []
    for run in load_runs(out):
        if run["method"] != method:
            continue
        c, last = run["curve" if test_scores else "val_curve"], int(run["rounds"])
        if not c["accuracy"]:
            raise SystemExit(
                f"{method} seed {run['seed']} has no validation accuracy (it predates the "
                "validation split): rerun it to choose a budget, or pass --test-scores to "
                "re-derive a verdict made from it before"
            )
        if upto > last:
            raise SystemExit(f"{method} seed {run['seed']} ran {last} rounds, not {upto}")
        means = part_means(c["round"], c["accuracy"], upto or last, parts)
        rows.append({"seed": run["seed"], "means": means, "gain": 100 * (means[-1] - means[-2])})
    if not rows:
        raise SystemExit(f"no finished run of method '{method}' under {out}/runs")
    return sorted(rows, key=lambda row: row["seed"])


def markdown(method: str, rows: list[dict[str, Any]], parts: int, flat: float) -> str:
    """The table, and a one-line verdict against ``flat`` points."""
    head = [f"part {i + 1}/{parts}" for i in range(parts)]
    lines = [
        f"| {method}, seed | " + " | ".join(head) + " | last part − the one before (points) |",
        "|---" * (parts + 2) + "|",
    ]
    for row in rows:
        cells = " | ".join(f"{m:.3f}" for m in row["means"])
        lines.append(f"| {row['seed']} | {cells} | {row['gain']:+.1f} |")
    gains = [row["gain"] for row in rows]
    verdict = "flat" if mean(gains) < flat else "still rising"
    lines.append("")
    lines.append(
        f"{verdict}: the last part adds {mean(gains):+.1f} points, mean of {len(rows)} "
        f"seed(s) (flat: under {flat:+.1f}; per seed {min(gains):+.1f} to {max(gains):+.1f})"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="a benchmarks.accuracy.compare result folder")
    parser.add_argument("--method", default="fedavg")
    parser.add_argument("--parts", type=int, default=4, help="spans per run (default: quarters)")
    parser.add_argument("--flat", type=float, default=1.0, help="points; a smaller gain is flat")
    parser.add_argument("--upto", type=int, default=0, help="read only rounds 1..N (0: all)")
    parser.add_argument(
        "--test-scores",
        action="store_true",
        help="read the test curve: only to re-derive a verdict on runs from before the "
        "validation split, never to choose a budget",
    )
    args = parser.parse_args(argv)
    if args.parts < 2:
        parser.error(f"--parts must be at least 2, got {args.parts}")
    print(
        markdown(
            args.method,
            plateau_rows(args.out, args.method, args.parts, args.upto, args.test_scores),
            args.parts,
            args.flat,
        )
    )


if __name__ == "__main__":
    main()
