"""Report a comparison: tables, plots and a README section from its ``results.json`` files.

Reads every finished run under ``<out>/runs/<method>-s<seed>/<run>/results.json`` (a run
without a ``summary`` is still going or died, and is left out) and writes to ``out``::

    runs.csv                one row per run
    table.csv, table.md     one row per method (mean and std over seeds); table.md's
                            footnote says what every column and plot shows
    accuracy.png            accuracy per round: mean over seeds, band min-max over seeds
    accuracy_compute.png    the same against cumulative client updates and round time
    accuracy_bytes.png      the same against cumulative MB sent down and up (log x)
    memory.png              worst per-client training peak (estimated; CUDA where measured)
    participation.png       eligible and trained share of the nodes

:func:`update_readme` copies the table, figures and commands into a README section.
Nothing here runs Flower; :mod:`benchmarks.runner` does.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shlex
import statistics
from collections.abc import Iterable, Sequence
from math import nan
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.revision import table_note
from benchmarks.run_files import read_results, results_paths

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
# Accuracy curves against cost: the x of each is a cumulative sum over the run's rounds.
# results.json has no per-node FLOP or example count, so "client work" is what it has:
# aggregated updates (one local training job each) and the rounds' wall time.
UPDATES = "cumulative client updates aggregated (one local training job each)"
SECONDS = "cumulative round wall time, s (training + server evaluation)"
MEGABYTES = "cumulative MB sent (model down + updates up, all nodes)"
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


def _mean(values: Iterable[float]) -> float:
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


def curve(rounds: Sequence[dict[str, Any]]) -> dict[str, list[float]]:
    """Accuracy at each evaluated round with the run's cumulative cost up to that round.

    Keys: ``round``, ``updates``, ``seconds``, ``mb`` (the x of the plots) and ``accuracy``.
    """
    out: dict[str, list[float]] = {k: [] for k in CURVE}
    updates = seconds = mb = 0.0
    for r in rounds:
        updates += r.get("aggregated", r.get("replies", 0)) or 0
        seconds += r.get("round_s", 0.0) or 0.0
        mb += ((r.get("bytes_down") or 0) + (r.get("bytes_up") or 0)) / 2**20
        if isinstance(r.get("accuracy"), int | float):
            for key, value in zip(
                out, (r["round"], updates, seconds, mb, r["accuracy"]), strict=True
            ):
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
    # CUDA clients report max_memory_allocated per train call; 0 elsewhere
    cuda_peak = max((r.get("peak_mb_measured") or 0.0 for r in rounds), default=0.0)
    return {
        "final_accuracy": final,
        "tail_accuracy": _mean(tail) if tail else final,
        "best_accuracy": max((a for a in (*accs, final) if a == a), default=float("nan")),
        "rounds": summary.get("rounds", len(rounds)),
        "wall_s": data.get("wall_s", float("nan")),
        # median: robust to a round slowed by other work on the machine
        "s_per_round": statistics.median([r["round_s"] for r in rounds if "round_s" in r] or [nan]),
        "peak_mb_est": max(needs) if needs else float("nan"),
        "peak_mb_cuda": cuda_peak if cuda_peak > 0 else float("nan"),
        "full_model_mb_est": summary.get("full_model_peak_mb_est", float("nan")),
        "smallest_budget_mb": min(budgets) if budgets else float("nan"),
        "eligible_share": _mean(share),
        "trained_share": len(partitions) / nodes if nodes else float("nan"),
        "mb_down_per_round": _mean(r.get("bytes_down", 0) / 2**20 for r in rounds),
        "mb_up_per_round": _mean(r.get("bytes_up", 0) / 2**20 for r in rounds),
        "curve": curve(rounds),
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
        for key, _, _ in COLUMNS:
            entry[key] = _mean(r[key] for r in runs)
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
    head = ["method", "seeds", *(h for _, h, _ in COLUMNS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in table:
        cells = [e["method"], str(e["seeds"]), *(_cell(e, k, f) for k, _, f in COLUMNS)]
        lines.append("| " + " | ".join(cells) + " |")
    note = (
        "\nmean acc, last 25% of rounds: mean test accuracy of the evaluations in the last "
        "quarter of the rounds; worst client peak: the largest estimated training peak any "
        "selected node was asked for (ProFL's memory model); (CUDA): the largest "
        "torch.cuda.max_memory_allocated() a node reported ('-' without CUDA clients; "
        "benchmarks/method_memory.py measures every method's jobs on a GPU without Flower); "
        "eligible share: mean over rounds "
        "of eligible/online nodes; nodes trained: share of nodes selected at least once; "
        "wall s: the ServerApp's run time (results.json).\n"
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
    keys = [k for k, _, _ in COLUMNS]
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


def band(
    xs: Sequence[Sequence[float]], ys: Sequence[Sequence[float]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """x, mean, min and max over seeds, on every seed's x that all seeds reach.

    Seeds evaluate at different rounds (ProFL evaluates at its transitions) and reach
    different cumulative costs, so each seed's curve is interpolated linearly first.
    """
    start, stop = max(x[0] for x in xs), min(x[-1] for x in xs)
    grid = np.unique(np.concatenate([np.asarray(x, dtype=float) for x in xs]))
    grid = grid[(grid >= start) & (grid <= stop)]
    if not grid.size:  # no x that every seed reaches
        return grid, grid, grid, grid
    stack = np.array([np.interp(grid, x, y) for x, y in zip(xs, ys, strict=True)])
    return grid, stack.mean(0), stack.min(0), stack.max(0)


def _pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (no display), imported only to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _accuracy_panel(ax: Any, rows: list[dict[str, Any]], methods: Sequence[str], x: str) -> None:
    """One line per method (mean over seeds) with its min-max band, against curve key ``x``."""
    drawn = 0
    for m in methods:
        curves = [r["curve"] for r in rows if r["method"] == m and r["curve"]["accuracy"]]
        if not curves:
            continue
        grid, mean, lo, hi = band([c[x] for c in curves], [c["accuracy"] for c in curves])
        label = f"{m} (n={len(curves)})" if len(curves) > 1 else m
        # matplotlib cycles 10 colours: the next ten methods reuse them dashed
        style = "-" if drawn % 20 < 10 else "--"
        (line,) = ax.plot(grid, mean, style, label=label, marker="." if len(grid) < 30 else None)
        drawn += 1
        if len(curves) > 1:
            ax.fill_between(grid, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set(ylabel="test accuracy (global model)")
    ax.grid(alpha=0.3)
    ax.legend()


def plot_accuracy(out: Path, rows: list[dict[str, Any]], methods: Sequence[str]) -> None:
    """accuracy.png (per round), accuracy_compute.png and accuracy_bytes.png."""
    import matplotlib.ticker

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    _accuracy_panel(ax, rows, methods, "round")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set(xlabel="round", title="Accuracy per round (mean over seeds, band: min-max)")
    _save(plt, fig, out / "accuracy.png")

    fig, axes = plt.subplots(1, 2, figsize=(14, 5), sharey=True)
    for ax, x, label in zip(axes, ("updates", "seconds"), (UPDATES, SECONDS), strict=True):
        _accuracy_panel(ax, rows, methods, x)
        ax.set(xlabel=label)
    axes[0].set(title="Accuracy against client updates")
    axes[1].set(title="Accuracy against round time (simulation, one machine)")
    _save(plt, fig, out / "accuracy_compute.png")

    fig, ax = plt.subplots(figsize=(8, 5))
    _accuracy_panel(ax, rows, methods, "mb")
    ax.set(xlabel=MEGABYTES, xscale="log", title="Accuracy against communication (log x)")
    _save(plt, fig, out / "accuracy_bytes.png")


def _save(plt: Any, fig: Any, path: Path) -> None:
    """Write and close ``fig``: a report draws many figures in one process."""
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")  # keeps a legend outside the axes
    plt.close(fig)


def plot_memory(out: Path, rows: list[dict[str, Any]], table: list[dict[str, Any]]) -> None:
    """memory.png: worst client peak per method, estimated and CUDA-measured where present."""
    plt = _pyplot()
    methods = [e["method"] for e in table]
    est = np.array([e["peak_mb_est"] for e in table], dtype=float)
    cuda = np.array([e["peak_mb_cuda"] for e in table], dtype=float)
    y = np.arange(len(methods))
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(methods) + 2))
    if np.isnan(cuda).all():
        ax.barh(y, np.nan_to_num(est), color="tab:blue", label="estimated")
    else:
        ax.barh(y - 0.2, np.nan_to_num(est), 0.4, color="tab:blue", label="estimated")
        ax.barh(y + 0.2, np.nan_to_num(cuda), 0.4, color="tab:orange", label="CUDA-measured")
    full = _mean(e["full_model_mb_est"] for e in table)
    small = _mean(r["smallest_budget_mb"] for r in rows)
    if full == full:
        ax.axvline(full, color="k", ls="--", label=f"full-model training {full:.1f} MB (est.)")
    if small == small:
        ax.axvline(small, color="tab:red", ls=":", label=f"smallest budget {small:.1f} MB")
    ax.set_yticks(list(y), methods)
    ax.invert_yaxis()
    ax.set(xlabel="MB", title="Worst-case per-client training peak")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: bars fill the axes
    _save(plt, fig, out / "memory.png")


def plot_participation(out: Path, table: list[dict[str, Any]]) -> None:
    """participation.png: share of nodes eligible per round and trained at least once."""
    plt = _pyplot()
    methods = [e["method"] for e in table]
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(methods) + 2))
    y = range(len(methods))
    ax.barh([i - 0.2 for i in y], [e["eligible_share"] for e in table], 0.4, label="eligible")
    ax.barh([i + 0.2 for i in y], [e["trained_share"] for e in table], 0.4, label="trained")
    ax.set_yticks(list(y), methods)
    ax.invert_yaxis()
    ax.set(xlabel="share of nodes", xlim=(0, 1.05), title="Participation")
    ax.legend(loc="lower right")
    _save(plt, fig, out / "participation.png")


def write_plots(out: Path, rows: list[dict[str, Any]], table: list[dict[str, Any]]) -> None:
    """Every file of :data:`PLOTS`."""
    plot_accuracy(out, rows, [e["method"] for e in table])
    plot_memory(out, rows, table)
    plot_participation(out, table)


def report(out: Path, order: Sequence[str]) -> list[dict[str, Any]]:
    """Tables and plots from every finished run under ``out``."""
    rows = load_runs(out)
    if not rows:
        print(f"no finished runs under {out}/runs", flush=True)
        return []
    table = by_method(rows, order)
    write_tables(out, rows, table)
    write_plots(out, rows, table)
    print((out / "table.md").read_text(), flush=True)
    return table


def update_readme(readme: Path, out: Path) -> bool:
    """Put ``out``'s table, figures and commands between the README's markers for ``out``.

    The markers are ``<!-- compare:<folder name> -->`` and ``<!-- /compare:<folder name> -->``;
    a README without them is left alone (False).
    """
    start, end = f"<!-- compare:{out.name} -->", f"<!-- /compare:{out.name} -->"
    text = readme.read_text()
    if start not in text or end not in text:
        return False
    rel = os.path.relpath(out, readme.parent)
    manifest = json.loads((out / "manifest.json").read_text())
    commands = [
        "python -m benchmarks.compare " + " ".join(shlex.quote(a) for a in argv[1:])
        for argv in manifest.get("commands", [])
    ]
    body = "\n".join(
        [
            start,
            "```bash",
            *commands,
            "```",
            "",
            (out / "table.md").read_text().strip(),
            "",
            *(f"![{alt}]({rel}/{name})" for name, alt, _ in PLOTS),
            end,
        ]
    )
    head, rest = text.split(start, 1)
    readme.write_text(head + body + rest.split(end, 1)[1])
    return True
