"""Fault injection in a real Ray simulation (`flwr run`): crashing, slow and lying clients.

Seven of ten SuperNodes run ``tests/apps/faulty_client.py``: one crashes, one
sleeps past the round timeout once, one is slow but in time, and four reply
with NaN arrays, a negative example count, a wrong shape or a key of another
block. The run must finish the schedule, log every rejection with its node,
and keep the global model finite.

Nothing here assumes a quiet machine. The round timeout is sized from a healthy
round measured just before, on the same machine under the same load, and the
slow and hanging faults are relative to it. Every process trains on one torch
thread: with other jobs on both cores, two threads per process made one round
10-17x slower than one thread (measured).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.apps.faulty_client import FAULTS
from tests.support.flwr_cli import copy_app, flwr_run
from tests.support.paths import REPO

pytestmark = [pytest.mark.simulation, pytest.mark.slow]

NODES = 10
CRASH = next(p for p, fault in FAULTS.items() if fault == "crash")
# Small on purpose: a tenth of each partition, and a round budget that holds one
# round per step (at most 8) plus one for the round the hanging node spoils.
RUN = {
    "width": 0.25,
    "memory-profile": "uniform",
    "data-subsample": 0.1,
    "eval-test-size": 2000,  # rounds scored on a fixed fifth of the test split (final: all)
    "fraction-train": 1.0,
    "min-train-nodes": NODES,
    "min-rounds-per-step": 1,
    "max-rounds-stage1": 1,
    "max-rounds-stage2": 1,
    "em-window": 2,
    "min-replies": 2,
    "num-server-rounds": 9,
    "seed": 2,
}
MIN_ROUND_TIMEOUT = 30.0  # what a quiet machine uses
# A healthy round of the run must end well inside the timeout, even if the load
# grows after the measurement; only the round of the hanging node waits it out.
TIMEOUT_PER_MEASURED = 3.0
ONE_THREAD = {"OMP_NUM_THREADS": "1"}

# A fresh process trains one round of every node in turn, as the simulation's
# single actor does on two cores, and prints its seconds (data loading included,
# as in the run's first round).
MEASURE = """
import json, sys, time
from profl_strategy.engine.protocol import TRAIN_STEP
from server_app.app import run_profl
from tests.inprocess_grid import InProcessGrid
from tests.support.flower import set_task_identity
set_task_identity()

class OneRound(InProcessGrid):
    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        t0 = time.monotonic()
        replies = super().send_and_receive(messages, timeout=timeout)
        if messages[0].metadata.message_type == TRAIN_STEP:
            print(time.monotonic() - t0, flush=True)
            sys.exit(0)
        return replies

nodes, cfg = json.loads(sys.argv[1])
run_profl(OneRound(nodes), cfg)
"""


def healthy_round_s(data_dir: Path, out: Path) -> float:
    """Seconds one healthy round of all nodes takes on this machine, now."""
    nodes = [{"partition-id": i, "num-partitions": NODES} for i in range(NODES)]
    cfg = {**RUN, "data-dir": str(data_dir), "outputs-dir": str(out)}
    proc = subprocess.run(
        [sys.executable, "-c", MEASURE, json.dumps([nodes, cfg])],
        cwd=REPO,
        env=os.environ | ONE_THREAD,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return float(proc.stdout.split()[-1])


def run_config(values: dict) -> str:
    """``--run-config`` text: strings quoted, numbers as they are."""
    return " ".join(f"{k}='{v}'" if isinstance(v, str) else f"{k}={v}" for k, v in values.items())


@pytest.fixture(scope="module")
def faulty_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> tuple[str, dict]:
    tmp = tmp_path_factory.mktemp("faults")
    measured = healthy_round_s(data_dir, tmp / "measure")
    timeout = math.ceil(max(MIN_ROUND_TIMEOUT, TIMEOUT_PER_MEASURED * measured))
    app = copy_app(tmp / "app")
    shutil.copy(REPO / "tests" / "apps" / "faulty_client.py", app / "client_app" / "faulty.py")
    toml = app / "pyproject.toml"
    text = toml.read_text()
    assert 'clientapp = "client_app.app:app"' in text
    toml.write_text(text.replace("client_app.app:app", "client_app.faulty:app"))
    cfg = run_config(
        {
            **RUN,
            "data-dir": str(data_dir),
            "outputs-dir": str(tmp / "home" / "out"),
            "round-timeout": timeout,
        }
    )
    with pytest.MonkeyPatch.context() as mp:  # flwr_run passes os.environ on
        for key, value in ONE_THREAD.items():
            mp.setenv(key, value)
        log, results = flwr_run(app, tmp / "home", cfg, supernodes=NODES)
    note = f"healthy round measured {measured:.1f} s, round-timeout={timeout}\n"
    assert len(results) == 1, note + log[-3000:]
    return note + log, results[0]


def test_run_survives_faulty_clients(faulty_run: tuple[str, dict]) -> None:
    log, res = faulty_run
    summary = res["summary"]
    assert summary["schedule_done"], log[-3000:]
    assert math.isfinite(summary["final_loss"])
    assert summary["final_accuracy"] > 0.3  # chance is 0.1
    rounds = res["rounds"]
    always_bad = {p for p, fault in FAULTS.items() if fault not in ("slow", "timeout-once")}

    def bad(r: dict) -> int:
        return sum(n["partition"] in always_bad for n in r["selected_nodes"])

    for r in rounds:
        # a selected node that always misbehaves fails (the crash), is rejected (the
        # liars) or, when late, is missing
        assert r["aggregated"] <= r["selected"] - bad(r)
        assert r["failed"] + r["rejected"] + (r["selected"] - r["replies"]) >= bad(r)
        crashed = sum(n["partition"] == CRASH for n in r["selected_nodes"])
        assert r["failed"] >= crashed
    assert sum(r["aggregated"] for r in rounds) > 0
    # The node that slept past the timeout: a round went on without its reply (it
    # is missing, or the SuperLink answered that the message expired).
    spoilt = [r for r in rounds if r["aggregated"] < r["selected"] - bad(r)]
    assert spoilt, log[-3000:]
    assert any(r["aggregated"] >= RUN["min-replies"] for r in spoilt), spoilt
    # The slow node was in time: some round it was in used every honest reply.
    slow = next(p for p, fault in FAULTS.items() if fault == "slow")
    assert any(
        r["aggregated"] == r["selected"] - bad(r)
        for r in rounds
        if slow in {n["partition"] for n in r["selected_nodes"]}
    ), log[-3000:]


def test_every_rejection_is_logged_with_its_node(faulty_run: tuple[str, dict]) -> None:
    log, _ = faulty_run
    reasons = re.findall(r"reply of node (\d+) rejected: (.*)", log)
    text = " ".join(why for _, why in reasons).lower()
    for marker in ("non-finite", "num-examples", "shape", "blocks.99"):
        assert marker in text, (marker, reasons[:10])
    # one node per kind of rejected content: NaN, negative count, shape, foreign key
    assert len({node for node, _ in reasons}) == 4
    failures = re.findall(r"reply of node (\d+) failed: error reply: (.*)", log)
    # the crash; and the SuperLink's answer for the hanging node, if the server asked
    # after its deadline
    crashes = {node for node, why in failures if "message unavailable" not in why.lower()}
    assert len(crashes) == 1, failures[:10]
