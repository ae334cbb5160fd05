"""A run killed with SIGKILL at a random round, then resumed, ends like an uninterrupted one.

The run goes in a child process (real strategy and ClientApp handlers over the
in-process Grid); the test waits until a randomly drawn round has been recorded,
waits a random fraction of a second more (so the kill lands anywhere in the next
round, checkpoint writing included) and sends SIGKILL. Resuming from the run
folder must give the same transitions, rounds and final numbers, to the bit.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from server_app.app import run_profl
from tests.inprocess_grid import InProcessGrid
from tests.support.paths import REPO
from tests.support.runs import NODES, config, steps_of

pytestmark = pytest.mark.slow

CHILD = """
import json, sys
from tests.support.flower import set_task_identity
set_task_identity()
from server_app.app import run_profl
from tests.inprocess_grid import InProcessGrid
nodes, cfg = json.loads(sys.argv[1])
run_profl(InProcessGrid(nodes), cfg)
"""


def recorded_rounds(out: Path) -> tuple[Path | None, int]:
    for path in out.glob("*/results.json"):
        try:
            return path.parent, len(json.loads(path.read_text())["rounds"])
        except (json.JSONDecodeError, KeyError):
            return path.parent, 0
    return None, 0


@pytest.mark.usefixtures("task_identity")
def test_sigkill_at_a_random_round_then_resume(data_dir: Path, tmp_path: Path) -> None:
    whole = run_profl(InProcessGrid(NODES), config(data_dir, tmp_path / "whole"))
    seed = int(os.environ.get("PROFL_KILL_SEED", time.time_ns() % 10_000))
    draw = random.Random(seed)
    kill_after = draw.randrange(1, whole["rounds"] - 1)
    extra_delay = draw.uniform(0.0, 1.0)
    why = f"PROFL_KILL_SEED={seed}: killed after round {kill_after} + {extra_delay:.2f} s"

    out = tmp_path / "killed"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps([NODES, config(data_dir, out)])], cwd=REPO
    )
    deadline = time.monotonic() + 600
    run_dir, seen = None, 0
    while seen < kill_after and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
        run_dir, seen = recorded_rounds(out)
    time.sleep(extra_delay)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL, f"the run ended before the kill; {why}"
    assert run_dir is not None and (run_dir / "checkpoint.pt").exists(), why

    resumed = run_profl(InProcessGrid(NODES), config(data_dir, out, resume=str(run_dir)))
    assert resumed["schedule_done"], why
    assert resumed["rounds"] == whole["rounds"], why
    assert steps_of(resumed) == steps_of(whole), why
    assert resumed["final_accuracy"] == whole["final_accuracy"], why
    assert resumed["final_loss"] == whole["final_loss"], why
