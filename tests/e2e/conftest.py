"""The e2e layer's one real ``flwr run`` simulation, shared by the files that assert on it.

A Ray simulation costs a SuperLink, Ray's start-up and its rounds; the README's first-run
check (``test_first_run.py``) and the simulation's checks (``test_simulation.py``) assert
different things about the same run, so it runs once a session. Its in-process twin
(``server_app.inprocess.simulate``, same config and nodes) runs beside it in a child
process: the simulation's single Ray actor leaves the second core of a 2-core machine
mostly idle.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flwr.common.config import parse_config_args

from benchmarks.accuracy.runner import free_port
from server_app import local_superlink
from tests.support.paths import REPO
from tests.support.readme import (
    ReadmeRun,
    option,
    readme_run_command,
    run_readme,
    with_run_config,
)

# Both stages, one round a step (8 rounds), on 20 nodes with a quarter of their iid
# partitions each: a few seconds a round, and still well above chance (0.67 measured).
SIMULATION = (
    "width=0.25 partitioner='iid' data-subsample=0.25 eval-test-size=2000 "
    "min-rounds-per-step=1 max-rounds-stage1=1 max-rounds-stage2=1 em-window=2 "
    "fraction-train=0.3 seed=1 share-rounds=false overrides='method.shrink=true'"
)


# The same run on the in-process engine, in a fresh process; prints its summary's key facts.
TWIN = """
import json, sys
from flwr.common.config import parse_config_args
from server_app.inprocess import simulate

run_config, nodes, out = sys.argv[1:]
config = parse_config_args([run_config]) | {"outputs-dir": out}
summary = simulate(config, num_nodes=int(nodes))
print(json.dumps({k: summary[k] for k in ("run_dir", "final_accuracy")}))
"""


def start_twin(argv: list[str], out: Path) -> subprocess.Popen[str]:
    """The in-process twin of the README's command ``argv``, started, not awaited."""
    federation = parse_config_args([option(argv, "--federation-config")])
    cmd = [sys.executable, "-c", TWIN, option(argv, "--run-config")]
    cmd += [str(federation["num-supernodes"]), str(out)]
    env = os.environ | {"OMP_NUM_THREADS": "1"}  # one core: the other is the simulation's
    return subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


@pytest.fixture(scope="session")
def readme_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[ReadmeRun]:
    """The README's command, as printed, on a fresh Flower home: first with a data-dir that
    does not exist, then with :data:`SIMULATION`'s keys; the local SuperLink stopped after."""
    tmp = tmp_path_factory.mktemp("readme")
    argv = readme_run_command()
    home, port = tmp / "flwr-home", free_port()
    twin: subprocess.Popen[str] | None = None
    try:
        failed = run_readme(
            with_run_config(argv, tmp / "nowhere", f"outputs-dir='{tmp / 'failed'}'"),
            home,
            port,
            600,
        )
        link = local_superlink.local_superlink(str(port))
        good = with_run_config(argv, data_dir, f"{SIMULATION} outputs-dir='{tmp / 'out'}'")
        twin = start_twin(good, tmp / "twin")
        started = time.monotonic()
        run = run_readme(good, home, port, 900)
        seconds = time.monotonic() - started
        results = [json.loads(p.read_text()) for p in sorted((tmp / "out").glob("*/results.json"))]
        out, _ = twin.communicate(timeout=900)
        assert twin.returncode == 0, f"the in-process twin failed: {out[-3000:]}"
        twin_summary = json.loads(out.strip().splitlines()[-1])
        yield ReadmeRun(failed, link, run, good, home, results, seconds, twin_summary)
    finally:
        if twin is not None and twin.poll() is None:
            twin.kill()
            twin.wait()
        subprocess.run(
            [sys.executable, "-m", "server_app.local_superlink", "--port", str(port), "--stop"],
            cwd=REPO, capture_output=True, timeout=60,
        )  # fmt: skip
    assert local_superlink.local_superlink(str(port)) is None, "the local SuperLink still runs"
