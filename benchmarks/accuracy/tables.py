"""A comparison's numbers: one row per run, mean ± std per method, and the tables' files.

:func:`run_metrics` reads one ``results.json``; :func:`load_runs` every finished run of a
comparison folder; :func:`by_method` averages over seeds; :func:`write_tables` writes
``table.md`` (headed by the runs' commits where they differ, footnoted with what every
column and plot shows), ``table.csv`` and ``runs.csv``. The committed tables are rebuilt
from their runs by ``compare --report-only``, so every string of ``table.md`` here is part
of what they must rebuild to, byte for byte.

Runs since issue 39 also score the server's validation split (``val-fraction`` of the
training split, in no partition): a table with such a run shows validation accuracy next
to test (:data:`VAL_COLUMNS`, ``-`` for a run without it), and a choice between settings
reads it (:data:`SELECT_ON`), never test accuracy. A table whose runs all predate the
split has no validation columns, so the committed tables still rebuild as they were.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Iterable, Sequence
from math import nan
from pathlib import Path
from typing import Any

from benchmarks.accuracy.run_files import read_results, results_paths
from benchmarks.common.revision import table_note

COLUMNS = [  # key, header, format
    ("final_accuracy", "final acc", ".4f"),
    ("tail_accuracy", "mean acc, last 25% of rounds", ".4f"),
    ("best_accuracy", "best acc", ".4f"),
    ("rounds", "rounds", ".0f"),
    ("wall_s", "wall s", ".0f"),
    ("s_per_round", "median s/round", ".1f"),
    ("peak_mb_est", "worst client peak MB (est.)", ".2f"),
    ("peak_mb_cuda", "worst client peak MB (CUDA)", ".2f"),
    ("full_model_mb_est", "full-model MB (est.)", ".2f"),
    ("eligible_share", "eligible share", ".3f"),
    ("trained_share", "nodes trained", ".3f"),
    ("mb_down_per_round", "MB down/round", ".3f"),
    ("mb_up_per_round", "MB up/round", ".3f"),
]
# Validation columns, each shown right after the test column it is keyed by, in a table
# where some run has validation figures.
VAL_COLUMNS = {
    "final_accuracy": ("final_val_accuracy", "final val acc", ".4f"),
    "tail_accuracy": ("tail_val_accuracy", "mean val acc, last 25% of rounds", ".4f"),
}
# What a choice between settings reads: a round's validation accuracy (test is only reported).
SELECT_ON = "val_accuracy"
CURVE = ("round", "updates", "seconds", "mb", "accuracy")  # keys of curve()
PLOTS = [  # file, README alt text, what it shows (table.md's footnote)
    ("accuracy.png", "accuracy per round", "test accuracy per round"),
    (
        "accuracy_compute.png",
        "accuracy against client work",
        "test accuracy against cumulative client updates aggregated (a job's cost depends "
        "on the method's model: compare within a method family) and against cumulative round "
        "wall time (all simulated clients share one machine, so it moves with its load)",
    ),
    ("accuracy_bytes.png", "accuracy against MB", "accuracy against cumulative MB sent, log x"),
    (
        "memory.png",
        "worst per-client peak",
        "worst client peak per method, estimated and (where a CUDA client reported one) "
        "measured, against the full model's estimate and the smallest budget",
    ),
    ("participation.png", "participation", "eligible share and nodes trained per method"),
]


def columns(with_val: bool) -> list[tuple[str, str, str]]:
    """The table's columns: :data:`COLUMNS`, with :data:`VAL_COLUMNS` after their test
    columns when ``with_val``."""
    out = []
    for column in COLUMNS:
        out.append(column)
        if with_val and column[0] in VAL_COLUMNS:
            out.append(VAL_COLUMNS[column[0]])
    return out


def has_validation(entries: Iterable[dict[str, Any]]) -> bool:
    """Whether any run (or method) of a table has a validation figure."""
    return any(not math.isnan(e.get("final_val_accuracy", nan)) for e in entries)


def mean_of(values: Iterable[float]) -> float:
    """Mean of the values that are numbers (None and NaN left out); NaN if none."""
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return sum(vals) / len(vals) if vals else float("nan")


def _std(values: Sequence[float]) -> float:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if len(vals) < 2:
        return 0.0
    m = sum(vals) / len(vals)
    return math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))


def _round_peak(r: dict[str, Any]) -> float:
    """Largest estimated peak a selected node was asked for (its plan's, with plans on)."""
    plans = [n["plan_need_mb"] for n in r.get("selected_nodes", []) if "plan_need_mb" in n]
    return max(plans) if plans else float(r["need_mb"])


def curve(rounds: Sequence[dict[str, Any]], score: str = "accuracy") -> dict[str, list[float]]:
    """Accuracy at each evaluated round with the run's cumulative cost up to that round.

    Keys: ``round``, ``updates``, ``seconds``, ``mb`` (the x of the plots) and ``accuracy``:
    the round's ``score`` (test accuracy; :data:`SELECT_ON` for the validation curve).
    """
    out: dict[str, list[float]] = {k: [] for k in CURVE}
    updates = seconds = mb = 0.0
    for r in rounds:
        updates += r.get("aggregated", r.get("replies", 0)) or 0
        seconds += r.get("round_s", 0.0) or 0.0
        mb += ((r.get("bytes_down") or 0) + (r.get("bytes_up") or 0)) / 2**20
        if isinstance(r.get(score), int | float):
            for key, value in zip(out, (r["round"], updates, seconds, mb, r[score]), strict=True):
                out[key].append(float(value))
    return out


def run_metrics(data: dict[str, Any]) -> dict[str, Any]:
    """The comparison's numbers of one run, from its results.json."""
    rounds = data.get("rounds", [])
    summary = data.get("summary", {})
    budgets = summary.get("budgets_mb") or []
    nodes = len(budgets) or max((r.get("online", 0) for r in rounds), default=0)
    accs = [r["accuracy"] for r in rounds if isinstance(r.get("accuracy"), int | float)]
    final = summary.get("final_accuracy", accs[-1] if accs else float("nan"))
    trained = [r for r in rounds if r.get("selected")]
    needs = [_round_peak(r) for r in trained if isinstance(r.get("need_mb"), int | float)]
    partitions = {n.get("partition") for r in rounds for n in r.get("selected_nodes", [])}
    share = [r.get("eligible", 0) / (r.get("online") or nodes) for r in rounds if nodes]
    # One evaluation of a model trained by 4 non-IID nodes a round swings by several
    # points; the mean over the last quarter of the run is the steadier figure.
    last = summary.get("rounds", len(rounds))
    tail = [r["accuracy"] for r in rounds if "accuracy" in r and r["round"] > 0.75 * last]
    # validation: NaN for a run from before the split (issue 39)
    final_val = summary.get("val_accuracy")
    final_val = float(final_val) if isinstance(final_val, int | float) else nan
    tail_val = [r[SELECT_ON] for r in rounds if SELECT_ON in r and r["round"] > 0.75 * last]
    # CUDA clients report max_memory_allocated per train call; 0 elsewhere
    cuda_peak = max((r.get("peak_mb_measured") or 0.0 for r in rounds), default=0.0)
    return {
        "final_accuracy": final,
        "tail_accuracy": mean_of(tail) if tail else final,
        "final_val_accuracy": final_val,
        "tail_val_accuracy": mean_of(tail_val) if tail_val else final_val,
        "best_accuracy": max((a for a in (*accs, final) if a == a), default=float("nan")),
        "rounds": summary.get("rounds", len(rounds)),
        "wall_s": data.get("wall_s", float("nan")),
        # median: robust to a round slowed by other work on the machine
        "s_per_round": statistics.median([r["round_s"] for r in rounds if "round_s" in r] or [nan]),
        "peak_mb_est": max(needs) if needs else float("nan"),
        "peak_mb_cuda": cuda_peak if cuda_peak > 0 else float("nan"),
        "full_model_mb_est": summary.get("full_model_peak_mb_est", float("nan")),
        "smallest_budget_mb": min(budgets) if budgets else float("nan"),
        "eligible_share": mean_of(share),
        "trained_share": len(partitions) / nodes if nodes else float("nan"),
        "mb_down_per_round": mean_of(r.get("bytes_down", 0) / 2**20 for r in rounds),
        "mb_up_per_round": mean_of(r.get("bytes_up", 0) / 2**20 for r in rounds),
        "curve": curve(rounds),
        "val_curve": curve(rounds, SELECT_ON),
    }


def load_runs(out: Path) -> list[dict[str, Any]]:
    """Every finished run under ``out/runs`` with its method, seed and numbers."""
    rows = []
    for path in results_paths(out):
        data = read_results(path)
        if "summary" not in data:
            continue
        method, _, seed = path.parent.parent.name.rpartition("-s")
        rows.append({"method": method, "seed": int(seed), **run_metrics(data)})
    return rows


def by_method(rows: list[dict[str, Any]], order: Sequence[str]) -> list[dict[str, Any]]:
    """Mean and std over seeds, per method, in the requested order."""
    methods = [m for m in order if any(r["method"] == m for r in rows)]
    methods += sorted({r["method"] for r in rows} - set(methods))
    table = []
    for m in methods:
        runs = [r for r in rows if r["method"] == m]
        entry: dict[str, Any] = {"method": m, "seeds": len(runs)}
        for key, _, _ in columns(with_val=True):
            entry[key] = mean_of(r[key] for r in runs)
            entry[key + "_std"] = _std([r[key] for r in runs])
        table.append(entry)
    return table


def _cell(entry: dict[str, Any], key: str, fmt: str) -> str:
    value, std = entry[key], entry.get(key + "_std", 0.0)
    if value != value:  # NaN
        return "-"
    return f"{value:{fmt}}" + (f" ± {std:{fmt}}" if entry["seeds"] > 1 and std else "")


def table_markdown(table: list[dict[str, Any]]) -> str:
    """table.md: one row per method, then what the columns and plots mean."""
    with_val = has_validation(table)
    shown = columns(with_val)
    head = ["method", "seeds", *(h for _, h, _ in shown)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in table:
        cells = [e["method"], str(e["seeds"]), *(_cell(e, k, f) for k, _, f in shown)]
        lines.append("| " + " | ".join(cells) + " |")
    note = (
        "\nmean acc, last 25% of rounds: mean test accuracy of the evaluations in the last "
        "quarter of the rounds; worst client peak: the largest estimated training peak any "
        "selected node was asked for (ProFL's memory model); (CUDA): the largest "
        "torch.cuda.max_memory_allocated() a node reported ('-' without CUDA clients; "
        # the committed tables name the script's path before issue 38's move
        # (benchmarks/memory/methods.py now); kept so they rebuild byte-identical
        "benchmarks/method_memory.py measures every method's jobs on a GPU without Flower); "
        "eligible share: mean over rounds "
        "of eligible/online nodes; nodes trained: share of nodes selected at least once; "
        "wall s: the ServerApp's run time (results.json).\n"
    )
    if with_val:
        note += (
            "val acc: the same on the server's validation split (val-fraction of the training "
            "split, in no node's partition); settings are chosen on it, test accuracy is only "
            "reported; '-': runs from before the validation split.\n"
        )
    plots = "; ".join(f"{name}: {what}" for name, _, what in PLOTS)
    curves = (
        "accuracy curves: mean over seeds (n in the legend), linear between evaluations and "
        "drawn as far as every seed got; shaded: min-max over seeds."
    )
    return "\n".join(lines) + "\n" + note + f"\nplots: {plots}. {curves}\n"


def write_tables(out: Path, rows: list[dict[str, Any]], table: list[dict[str, Any]]) -> None:
    """table.md (headed by the runs' commits where they differ), table.csv, runs.csv."""
    note = table_note(out, [f"{r['method']}-s{r['seed']}" for r in rows])
    (out / "table.md").write_text(note + table_markdown(table))
    keys = [k for k, _, _ in columns(has_validation(table))]
    with open(out / "table.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "seeds", *keys, *(k + "_std" for k in keys)])
        for e in table:
            w.writerow(
                [e["method"], e["seeds"], *(e[k] for k in keys), *(e[k + "_std"] for k in keys)]
            )
    with open(out / "runs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "seed", *keys])
        for r in rows:
            w.writerow([r["method"], r["seed"], *(r[k] for k in keys)])
