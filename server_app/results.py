"""Per-round log lines and a results JSON per run."""

from __future__ import annotations

import json
import os
import time
from logging import INFO
from pathlib import Path
from typing import Any

from flwr.common import log

HEADER = (
    "round stage block  elig/sel   acc    loss     EM     need-MB meas-MB  down-KB   up-KB  time"
)


def _fmt(v: Any, spec: str, width: int) -> str:
    return format(v, spec) if isinstance(v, int | float) else "-".rjust(width)


def round_line(r: dict[str, Any]) -> str:
    """One fixed-width line per round, the same in simulation and deployment."""
    return (
        f"{r['round']:5d} {r['stage']:5d} {r['block']:5d} "
        f"{r.get('eligible', 0):4d}/{r.get('selected', 0):<4d} "
        f"{_fmt(r.get('accuracy'), '6.4f', 6)} {_fmt(r.get('loss'), '7.4f', 7)} "
        f"{_fmt(r.get('em'), '6.3f', 6)} {_fmt(r.get('need_mb'), '9.2f', 9)} "
        f"{_fmt(r.get('peak_mb_measured') or None, '7.1f', 7)} "
        f"{r.get('bytes_down', 0) / 1024:8.1f} {r.get('bytes_up', 0) / 1024:7.1f} "
        f"{r.get('round_s', 0.0):5.1f}s"
    )


class RunRecorder:
    """Writes ``<run_dir>/results.json`` after every round (atomically)."""

    def __init__(self, run_dir: Path, config: dict[str, Any]) -> None:
        self.path = run_dir / "results.json"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.data: dict[str, Any] = {"config": config, "rounds": [], "started": time.time()}
        log(INFO, "results go to %s", self.path)
        log(INFO, HEADER)

    def round(self, record: dict[str, Any]) -> None:
        """Log and store one round."""
        self.data["rounds"].append(record)
        log(INFO, round_line(record))
        self.save()

    def finish(self, summary: dict[str, Any]) -> None:
        """Store the final summary and log it."""
        self.data["summary"] = summary
        self.data["wall_s"] = time.time() - self.data["started"]
        self.save()
        log(INFO, "summary: %s", json.dumps(summary, sort_keys=True))

    def save(self) -> None:
        """Write the JSON so a crash never leaves a half-written file."""
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        os.replace(tmp, self.path)
