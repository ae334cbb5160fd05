"""``flwr run`` of a throw-away copy of the app, on a private managed SuperLink."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

from benchmarks.accuracy.runner import flwr_env, free_port, listener_pids
from tests.support.paths import REPO


def flwr_run(app: Path, home: Path, run_config: str, supernodes: int) -> tuple[str, list[dict]]:
    """Run the app with `flwr run` on a private managed SuperLink; return log and results."""
    http, control = free_port(), free_port()
    env = flwr_env(home, http, control)
    cmd = [
        "flwr",
        "run",
        str(app),
        "--stream",
        "--run-config",
        run_config,
        "--federation-config",
        f"num-supernodes={supernodes}",
    ]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=app)
    finally:
        for pid in listener_pids(http):  # the managed SuperLink outlives `flwr run`
            os.kill(pid, signal.SIGTERM)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    results = [json.loads(p.read_text()) for p in sorted((home / "out").glob("*/results.json"))]
    return log, results


def copy_app(dst: Path) -> Path:
    """A copy of the app to run: nothing a run does can touch the checkout."""
    ignore = shutil.ignore_patterns(
        ".venv", ".git", "outputs", "__pycache__", "*.egg-info", ".pytest_cache", "deploy",
        "results", ".flwr*", ".cache*",
    )  # fmt: skip
    shutil.copytree(REPO, dst, ignore=ignore)
    return dst
