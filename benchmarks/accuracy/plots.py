"""A comparison's plots: accuracy against rounds, client work and bytes; memory; participation.

Every file of :data:`benchmarks.accuracy.tables.PLOTS`, drawn from :func:`load_runs
<benchmarks.accuracy.tables.load_runs>`' rows and :func:`by_method
<benchmarks.accuracy.tables.by_method>`' table. matplotlib is imported only when a plot is
drawn (Agg backend), so reading and tabulating runs needs no plotting stack.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.accuracy.tables import mean_of

# Accuracy curves against cost: the x of each is a cumulative sum over the run's rounds.
# results.json has no per-node FLOP or example count, so "client work" is what it has:
# aggregated updates (one local training job each) and the rounds' wall time.
UPDATES = "cumulative client updates aggregated (one local training job each)"
SECONDS = "cumulative round wall time, s (training + server evaluation)"
MEGABYTES = "cumulative MB sent (model down + updates up, all nodes)"


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
    full = mean_of(e["full_model_mb_est"] for e in table)
    small = mean_of(r["smallest_budget_mb"] for r in rows)
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
    """Every file of :data:`benchmarks.accuracy.tables.PLOTS`."""
    plot_accuracy(out, rows, [e["method"] for e in table])
    plot_memory(out, rows, table)
    plot_participation(out, table)
