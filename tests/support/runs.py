"""A short in-process ProFL run's configuration, and what its results folder holds."""

from __future__ import annotations

import json
from pathlib import Path

# Six nodes, partitions 0-5 of 60.
NODES = [{"partition-id": i, "num-partitions": 60} for i in range(6)]


def config(data_dir: Path, out: Path, **extra: object) -> dict:
    """The run config of a short two-stage ProFL run on the ``laptop`` preset."""
    return {
        "preset": "laptop",
        "data-dir": str(data_dir),
        "outputs-dir": str(out),
        "width": 0.25,
        "memory-profile": "uniform",
        # partitions 0-5 of 60 draw the 30% and 50% tiers: scaled, the 50% tier holds
        # every step (a run whose steps no node holds stops before training)
        "memory-scale": 1.6,
        "seed": 3,
        "fraction-train": 0.5,
        "min-rounds-per-step": 1,
        "max-rounds-stage1": 1,
        "max-rounds-stage2": 2,
        "em-window": 2,
        "eval-every": 100,
        # a quarter of each node's 1,000 rows: the runs check the schedule, the protocol and
        # the run folder, not what the model learns (which costs most of a run's time)
        "data-subsample": 0.25,
        # the progressive machinery these tests check: both stages, each step at its cap
        # (not the run's budget shared out), plain training unless a test asks for plans,
        # one-block output modules (these budgets are sized for them)
        "share-rounds": False,
        "overrides": "method.shrink=true method.output_depth=1",
        "plans": "off",
        **extra,
    }


def read_rounds(run_dir: str) -> list[dict]:
    """The per-round records of a run's ``results.json``."""
    return json.loads((Path(run_dir) / "results.json").read_text())["rounds"]


def steps_of(summary: dict) -> list[tuple]:
    """A run's step transitions: (step, why it ended, round)."""
    return [(t["step"], t["reason"], t["round"]) for t in summary["transitions"]]
