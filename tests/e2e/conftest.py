"""The e2e layer's one real ``flwr run`` simulation, shared by the files that assert on it.

A Ray simulation costs a SuperLink, Ray's start-up and its rounds; the README's first-run
check (``test_first_run.py``) and the simulation's checks (``test_simulation.py``) assert
different things about the same run, so it runs once a session.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.accuracy.runner import free_port
from server_app import local_superlink
from tests.support.paths import REPO
from tests.support.readme import ReadmeRun, readme_run_command, run_readme, with_run_config

# Both stages, one round a step (8 rounds), on 20 nodes with a quarter of their iid
# partitions each: a few seconds a round, and still well above chance (0.67 measured).
SIMULATION = (
    "width=0.25 partitioner='iid' data-subsample=0.25 eval-test-size=2000 "
    "min-rounds-per-step=1 max-rounds-stage1=1 max-rounds-stage2=1 em-window=2 "
    "fraction-train=0.3 seed=1 share-rounds=false overrides='method.shrink=true'"
)


@pytest.fixture(scope="session")
def readme_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[ReadmeRun]:
    """The README's command, as printed, on a fresh Flower home: first with a data-dir that
    does not exist, then with :data:`SIMULATION`'s keys; the local SuperLink stopped after."""
    tmp = tmp_path_factory.mktemp("readme")
    argv = readme_run_command()
    home, port = tmp / "flwr-home", free_port()
    try:
        failed = run_readme(
            with_run_config(argv, tmp / "nowhere", f"outputs-dir='{tmp / 'failed'}'"),
            home,
            port,
            600,
        )
        link = local_superlink.local_superlink(str(port))
        good = with_run_config(argv, data_dir, f"{SIMULATION} outputs-dir='{tmp / 'out'}'")
        started = time.monotonic()
        run = run_readme(good, home, port, 900)
        seconds = time.monotonic() - started
        results = [json.loads(p.read_text()) for p in sorted((tmp / "out").glob("*/results.json"))]
        yield ReadmeRun(failed, link, run, good, home, results, seconds)
    finally:
        subprocess.run(
            [sys.executable, "-m", "server_app.local_superlink", "--port", str(port), "--stop"],
            cwd=REPO, capture_output=True, timeout=60,
        )  # fmt: skip
    assert local_superlink.local_superlink(str(port)) is None, "the local SuperLink still runs"
