"""Comparison folders by hand: what ``benchmarks.accuracy.compare`` leaves, without running."""

from __future__ import annotations

import json
from pathlib import Path


def fake_run(
    out: Path,
    method: str,
    accs: list[float],
    need: float,
    plan_need: float,
    cuda: list[float] | None = None,
    seed: int = 0,
    vals: list[float] | None = None,
) -> None:
    """One finished run of ``method`` under ``out/runs``: ``accs`` a round, the needs given;
    ``vals``: validation accuracy a round (None: a run from before the validation split)."""
    rounds = [
        {
            "round": i + 1,
            "accuracy": a,
            **({"val_accuracy": vals[i]} if vals else {}),
            "need_mb": need,
            "selected": 2,
            "aggregated": 2,
            "eligible": 10,
            "online": 20,
            "bytes_down": 2**20,
            "bytes_up": 2**19,
            "round_s": 1.0,
            "peak_mb_measured": (cuda or [0.0] * len(accs))[i],
            "selected_nodes": [
                {"partition": i % 20, "plan_need_mb": plan_need},
                {"partition": (i + 1) % 20, "plan_need_mb": plan_need / 2},
            ],
        }
        for i, a in enumerate(accs)
    ]
    summary = {"final_accuracy": accs[-1], "rounds": len(accs), "full_model_peak_mb_est": 20.0}
    if vals:
        summary["val_accuracy"] = vals[-1]
    folder = out / "runs" / f"{method}-s{seed}" / "run"
    folder.mkdir(parents=True)
    data = {"rounds": rounds, "summary": summary, "wall_s": 12.0}
    (folder / "results.json").write_text(json.dumps(data))
