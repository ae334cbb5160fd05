"""The README's set-up command, as printed, run in a fresh Flower home on private ports."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from benchmarks.accuracy.runner import free_port
from server_app.local_superlink import SuperLink
from tests.support.paths import REPO

README_DATA_DIR = "/abs/path/to/shared/data"


@dataclass(frozen=True)
class ReadmeRun:
    """A first ``flwr run`` that fails, then the README's command with a small run config
    (``SIMULATION`` in ``tests/e2e/conftest.py``)."""

    failed: subprocess.CompletedProcess[str]  # data-dir points nowhere
    link: SuperLink | None  # the local SuperLink the failed run left running
    run: subprocess.CompletedProcess[str]  # the README's command on that SuperLink
    argv: list[str]  # the command of ``run``
    home: Path  # the (fresh) Flower home of both
    results: list[dict]  # the ``results.json`` of ``run``
    seconds: float
    twin: dict  # the same run in-process: its ``run_dir`` and ``final_accuracy``

    @property
    def log(self) -> str:
        return self.run.stdout + self.run.stderr


def readme_run_command() -> list[str]:
    """The `flwr run` line of the README's set-up block, continuation lines joined."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"## Set-up and run\n+```bash\n(.*?)```", text, re.S)
    assert block, "README has no ```bash block under '## Set-up and run'"
    commands = block.group(1).replace("\\\n", " ").splitlines()
    assert commands[0].split("#")[0].split() == ["pip", "install", "-e", "."]
    (run,) = [c for c in commands if "flwr run" in c]
    return shlex.split(run.split(" #")[0])


def with_run_config(argv: list[str], data_dir: Path, extra: str) -> list[str]:
    """The README's command with the real data path and ``extra`` run-config keys."""
    i = argv.index("--run-config") + 1
    argv = list(argv)
    argv[i] = argv[i].replace(README_DATA_DIR, str(data_dir)) + " " + extra
    return argv


def option(argv: list[str], name: str) -> str:
    """The value of ``name`` (e.g. ``--run-config``) in ``argv``."""
    return argv[argv.index(name) + 1]


def run_readme(
    argv: list[str], home: Path, port: int, timeout: float
) -> subprocess.CompletedProcess[str]:
    """``argv`` as a shell runs it, with no Flower variable but a fresh home and ports."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLWR_")}
    env |= {
        "FLWR_HOME": str(home),  # a fresh Flower home
        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(port),
        "FLWR_LOCAL_CONTROL_API_PORT": str(free_port()),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    # as a shell would run it: the README's line may set variables for the command
    return subprocess.run(
        ["bash", "-c", shlex.join(argv)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
