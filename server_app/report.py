"""What a person reads at the end of a run, and the time left while it runs.

``results.json`` keeps every figure; the log ends with a few lines a user can act on:
the score, each memory tier's measured peak against its budget, and where the files are.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

# A simulated node's allocator keeps freed heap, which the model does not predict.
FAST_NOTE = " (fast allocator policy; memory-guard=true holds it)"
# Round times that predict the rest: the first round pays start-up (Ray workers, data).
ETA_WINDOW = 10


def time_left(round_s: list[float], done: int, total: int) -> float | None:
    """Seconds left if the remaining rounds take the median of the recent ones."""
    recent = round_s[1:][-ETA_WINDOW:] or round_s[-ETA_WINDOW:]
    if not recent or total <= done:
        return None
    return statistics.median(recent) * (total - done)


def clock(seconds: float | None) -> str:
    """``1h02m``, ``4m05s`` or ``37s``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def measured_by_tier(
    rounds: Iterable[Mapping[str, Any]], budgets: Mapping[int, float]
) -> list[dict[str, Any]]:
    """Per memory tier (nodes with the same budget), the worst measured call peak, the
    whole-call budget it was held to and how many calls went over their budget."""
    tiers: dict[float, dict[str, Any]] = defaultdict(
        lambda: {"nodes": set(), "calls": 0, "over": 0, "worst_mb": 0.0, "budget_mb": 0.0}
    )
    for record in rounds:
        for node, m in (record.get("measured_nodes") or {}).items():
            tier = tiers[round(float(budgets.get(int(node), 0.0)), 2)]
            tier["nodes"].add(node)
            tier["calls"] += 1
            tier["over"] += bool(m["budget_mb"]) and m["measured_mb"] > m["budget_mb"]
            if m["measured_mb"] >= tier["worst_mb"]:
                tier["worst_mb"], tier["budget_mb"] = m["measured_mb"], m["budget_mb"]
            tier["policy"] = m.get("policy", "")
    return [{"tier_mb": mb, **t, "nodes": len(t["nodes"])} for mb, t in sorted(tiers.items())]


def summary_lines(summary: Mapping[str, Any], results_path: str) -> list[str]:
    """The run's last lines: score, memory per tier, files."""
    lines = [
        f"final test accuracy {summary['final_accuracy']:.4f} (seed {summary['seed']}, "
        f"{summary['rounds']} rounds, {clock(summary.get('wall_s'))})"
    ]
    if summary.get("val_accuracy") is not None:
        lines.append(
            f"  validation accuracy {summary['val_accuracy']:.4f} (the training rows held out "
            "of every partition: choose settings on it, not on test)"
        )
    if summary.get("final_accuracy_last_round") is not None:
        lines.append(
            f"  mean of the last {summary['final_average_rounds']} rounds' models; "
            f"the last round's model alone: {summary['final_accuracy_last_round']:.4f}"
        )
    if summary.get("stopped"):
        lines.append(f"  stopped before its schedule ended: {summary['stopped']}")
    tiers = summary.get("measured_by_tier") or []
    if tiers:
        lines.append(
            "peak memory per training call, measured over the idle ClientApp (simulated "
            "nodes share a process: over the call's start):"
        )
        for t in tiers:
            lines.append(
                f"  tier {t['tier_mb']:7.2f} MB, {t['nodes']:3d} nodes, {t['calls']:4d} calls: "
                f"worst {t['worst_mb']:6.1f} MB against a call budget of {t['budget_mb']:6.1f} MB, "
                f"{t['over']} over{FAST_NOTE if t['over'] and t.get('policy') == 'fast' else ''}"
            )
    problems = {k: summary.get(k, 0) for k in ("refusals", "failed_replies", "rejected_replies")}
    if any(problems.values()):
        lines.append("  " + ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in problems.items()))
    lines.append(f"results: {results_path}")
    plot = summary.get("plot")
    lines.append(f"plot:    {plot or 'none (pip install matplotlib to get one)'}")
    return lines


def plot_run(path: Path, rounds: list[Mapping[str, Any]]) -> Path | None:
    """Test (and validation) accuracy per round with the step changes marked; None without
    matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    scored = [(r["round"], r["accuracy"]) for r in rounds if r.get("accuracy") is not None]
    if not scored:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(*zip(*scored, strict=True), marker=".", lw=1, label="test")
    val = [(r["round"], r["val_accuracy"]) for r in rounds if r.get("val_accuracy") is not None]
    if val:
        ax.plot(*zip(*val, strict=True), lw=1, ls="--", label="validation")
        ax.legend(fontsize=8, loc="lower right")
    for r in rounds:
        if "transition" in r:
            ax.axvline(r["round"] + 0.5, color="grey", lw=0.5, ls=":")
    ax.set(xlabel="round", ylabel="accuracy", ylim=(0, 1))
    ax.set_title("accuracy per round (dotted: a step ended)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
