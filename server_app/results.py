"""Per-round log lines and a results JSON per run."""

from __future__ import annotations

import json
import os
import time
from logging import INFO
from pathlib import Path
from typing import Any

from flwr.common import log

from server_app.report import clock, measured_by_tier, plot_run, summary_lines, time_left

HEADER = (
    "    round stage block  elig/sel   acc val-acc    loss     EM     need-MB meas-MB  down-KB"
    "   up-KB   time   left"
)


def _fmt(v: Any, spec: str, width: int) -> str:
    return format(v, spec) if isinstance(v, int | float) else "-".rjust(width)


def round_line(r: dict[str, Any], total: int = 0, left: float | None = None) -> str:
    """One fixed-width line per round, the same in simulation and deployment: round i of
    at most ``total`` (the schedule may end first), test and validation accuracy (``-``
    without a validation split) and the estimated time ``left``."""
    return (
        f"{r['round']:5d}/{total:<4d}{r['stage']:4d} {r['block']:5d} "
        f"{r.get('eligible', 0):4d}/{r.get('selected', 0):<4d} "
        f"{_fmt(r.get('accuracy'), '6.4f', 6)} {_fmt(r.get('val_accuracy'), '7.4f', 7)} "
        f"{_fmt(r.get('loss'), '7.4f', 7)} "
        f"{_fmt(r.get('em'), '6.3f', 6)} {_fmt(r.get('need_mb'), '9.2f', 9)} "
        f"{_fmt(r.get('peak_mb_measured') or None, '7.1f', 7)} "
        f"{r.get('bytes_down', 0) / 1024:8.1f} {r.get('bytes_up', 0) / 1024:7.1f} "
        f"{r.get('round_s', 0.0):6.1f}s {clock(left):>6s}"
    )


class RunRecorder:
    """Writes ``<run_dir>/results.json`` after every round (atomically)."""

    def __init__(
        self,
        run_dir: Path,
        config: dict[str, Any],
        total_rounds: int = 0,
        key_sources: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.path = run_dir / "results.json"
        self.total_rounds = total_rounds
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.data: dict[str, Any] = {"config": config, "rounds": [], "started": time.time()}
        if key_sources is not None:  # each run-config key: {"value": ..., "from": ...}
            self.data["config_keys"] = key_sources
        log(INFO, "results go to %s", self.path)
        log(INFO, HEADER)

    def round(self, record: dict[str, Any]) -> None:
        """Log and store one round."""
        self.data["rounds"].append(record)
        times = [float(r.get("round_s", 0.0)) for r in self.data["rounds"]]
        left = time_left(times, int(record["round"]), self.total_rounds)
        log(INFO, round_line(record, self.total_rounds, left))
        self.save()

    def finish(self, summary: dict[str, Any], budgets: dict[int, float]) -> None:
        """Store the final summary, draw the accuracy curve, and end the log in words."""
        self.data["wall_s"] = time.time() - self.data["started"]
        summary["measured_by_tier"] = measured_by_tier(self.data["rounds"], budgets)
        plot = plot_run(self.path.with_name("accuracy.png"), self.data["rounds"])
        summary["plot"] = str(plot) if plot else None
        self.data["summary"] = summary
        self.save()
        for line in summary_lines(summary | {"wall_s": self.data["wall_s"]}, str(self.path)):
            log(INFO, line)

    def save(self) -> None:
        """Write the JSON so a crash never leaves a half-written file."""
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        os.replace(tmp, self.path)
