"""Did two comparisons compute the same thing? Run by run, every number but the time.

A change that must not change behaviour (batched loading, another ``malloc``, a re-timing on
another day) is checked on the comparison itself: each run of folder B against the run of
the same method and seed in folder A, on every per-round entry but its seconds
(``round_s``) and on the summary but its run folder. The table also gives each run's
ServerApp seconds (``wall_s``) in both, per method and in all, and the end-to-end seconds of
each folder's manifests, so one command says both "same numbers" and "how much faster".

Reads what :mod:`benchmarks.accuracy.tables` reads
(``<out>/runs/<method>-s<seed>/<run>/results.json``, plain or packed). Exit status 1 if a run
differs or is missing from B.

Usage::

    python -m benchmarks.accuracy.same_runs benchmarks/results/cifar10_plateau_550_batched \\
        benchmarks/results/cifar10_plateau_550_tcmalloc
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.accuracy.run_files import read_results, results_paths

TIMED = "round_s"  # the one per-round entry that may differ between equal runs
WHERE = "run_dir"  # the one summary entry that may differ


def outcome(data: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """What a run computed: every per-round entry but its time, and the summary but its folder."""
    rounds = [{k: v for k, v in r.items() if k != TIMED} for r in data["rounds"]]
    summary = {k: v for k, v in data["summary"].items() if k != WHERE}
    return rounds, summary


def finished_runs(out: Path) -> dict[str, dict[str, Any]]:
    """``<method>-s<seed>``: its results, for every finished run under ``out/runs``.

    A run resumed into a second folder counts by its last one.
    """
    runs = {}
    for path in results_paths(out):
        data = read_results(path)
        if "summary" in data:
            runs[path.parent.parent.name] = data
    return runs


def end_to_end(out: Path) -> float:
    """Seconds of the comparison commands that filled ``out`` (sum over its manifests)."""
    return sum(
        json.loads(p.read_text()).get("wall_seconds", 0.0) for p in out.glob("manifest*.json")
    )


def compare_rows(a: Path, b: Path) -> list[dict[str, Any]]:
    """One row per run of ``a``: equal in ``b`` or not, and its seconds in each."""
    runs_a, runs_b = finished_runs(a), finished_runs(b)
    if not runs_a:
        raise SystemExit(f"no finished run under {a}/runs: is it a comparison's --out folder?")
    rows = []
    for name, data in sorted(runs_a.items()):
        other = runs_b.get(name)
        rows.append({
            "run": name,
            "method": name.rpartition("-s")[0],
            "same": None if other is None else outcome(data) == outcome(other),
            "wall_a": data.get("wall_s", float("nan")),
            "wall_b": float("nan") if other is None else other.get("wall_s", float("nan")),
        })  # fmt: skip
    return rows


def _change(a: float, b: float) -> str:
    return f"{100 * (b - a) / a:+.0f}%" if a > 0 and b == b else ""


def _total_line(label: str, rows: Sequence[dict[str, Any]], strong: bool = False) -> str:
    """One summed row: how many of ``rows`` are the same, their seconds in A and B."""
    wa, wb = sum(r["wall_a"] for r in rows), sum(r["wall_b"] for r in rows)
    count = f"{sum(r['same'] is True for r in rows)}/{len(rows)}"
    if strong:
        label, count = f"**{label}**", f"**{count}**"
    return f"| {label} | {count} | {wa:.0f} | {wb:.0f} | {_change(wa, wb)} |"


def table_markdown(rows: Sequence[dict[str, Any]], a_total: float, b_total: float) -> str:
    """Per run, per method and in all: same numbers, seconds in A and B, change."""
    verdict = {True: "yes", False: "**no**", None: "missing"}
    lines = ["| run | same numbers | A s | B s | change |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['run']} | {verdict[r['same']]} | {r['wall_a']:.0f} | {r['wall_b']:.0f} "
            f"| {_change(r['wall_a'], r['wall_b'])} |"
        )
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        lines.append(_total_line(f"{method}, {len(mine)} runs", mine))
    lines.append(_total_line("all runs", rows, strong=True))
    if a_total and b_total:
        lines.append(
            f"| end to end (manifests) | | {a_total:.0f} | {b_total:.0f} "
            f"| {_change(a_total, b_total)} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("a", type=Path, help="the reference comparison folder")
    p.add_argument("b", type=Path, help="the comparison to check against it")
    args = p.parse_args(argv)
    rows = compare_rows(args.a, args.b)
    print(f"A = {args.a}\nB = {args.b}\n")
    print(table_markdown(rows, end_to_end(args.a), end_to_end(args.b)))
    return 0 if all(r["same"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
