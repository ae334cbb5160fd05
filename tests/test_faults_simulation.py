"""Fault injection in a real Ray simulation (`flwr run`): crashing, slow and lying clients.

Seven of ten SuperNodes run ``tests/apps/faulty_client.py``: one crashes, one
sleeps past the round timeout once, one is slow but in time, and four reply
with NaN arrays, a negative example count, a wrong shape or a key of another
block. The run must finish the schedule, log every rejection with its node,
and keep the global model finite.
"""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import pytest

from tests.apps.faulty_client import FAULTS
from tests.conftest import REPO
from tests.test_simulation import copy_app, flwr_run

pytestmark = pytest.mark.simulation

ROUND_TIMEOUT = 30


@pytest.fixture(scope="module")
def faulty_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> tuple[str, dict]:
    tmp = tmp_path_factory.mktemp("faults")
    app = copy_app(tmp / "app")
    shutil.copy(REPO / "tests" / "apps" / "faulty_client.py", app / "client_app" / "faulty.py")
    toml = app / "pyproject.toml"
    text = toml.read_text()
    assert 'clientapp = "client_app.app:app"' in text
    toml.write_text(text.replace("client_app.app:app", "client_app.faulty:app"))
    cfg = (
        f"data-dir='{data_dir}' outputs-dir='{tmp / 'home' / 'out'}' width=0.25 "
        "memory-profile='uniform' fraction-train=1.0 min-train-nodes=10 "
        "min-rounds-per-step=1 max-rounds-stage1=1 max-rounds-stage2=2 em-window=2 "
        f"round-timeout={ROUND_TIMEOUT} min-replies=2 num-server-rounds=30 seed=2"
    )
    log, results = flwr_run(app, tmp / "home", cfg, supernodes=10)
    assert len(results) == 1, log[-3000:]
    return log, results[0]


def test_run_survives_faulty_clients(faulty_run: tuple[str, dict]) -> None:
    log, res = faulty_run
    summary = res["summary"]
    assert summary["schedule_done"], log[-3000:]
    assert math.isfinite(summary["final_loss"])
    assert summary["final_accuracy"] > 0.3  # chance is 0.1
    rounds = res["rounds"]
    always_bad = {p for p, fault in FAULTS.items() if fault not in ("slow", "timeout-once")}
    for r in rounds:
        # a selected node that always misbehaves is rejected or, when late, missing
        bad = sum(n["partition"] in always_bad for n in r["selected_nodes"])
        assert r["aggregated"] <= r["selected"] - bad
        assert r["rejected"] + (r["selected"] - r["replies"]) >= bad
    assert sum(r["aggregated"] for r in rounds) > 0
    # the node that slept past the timeout: a round went on without its reply
    assert any(r["replies"] < r["selected"] for r in rounds)


def test_every_rejection_is_logged_with_its_node(faulty_run: tuple[str, dict]) -> None:
    log, _ = faulty_run
    reasons = re.findall(r"reply of node (\d+) rejected: (.*)", log)
    text = " ".join(why for _, why in reasons).lower()
    for marker in ("error reply", "non-finite", "num-examples", "shape", "blocks.99"):
        assert marker in text, (marker, reasons[:10])
    # one node per kind of rejected fault
    assert len({node for node, _ in reasons}) == 5
