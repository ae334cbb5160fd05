"""A new user's first run: the README's set-up command as printed, on a fresh Flower home.

Nothing is started by hand and no Flower variable is set here: whatever the README's
command needs, it must say itself. The only changes to it are the data path, a tiny
round budget, and private ports (so a SuperLink the user already runs is not reused).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.accuracy.runner import free_port
from server_app import local_superlink
from tests.support.paths import REPO

pytestmark = pytest.mark.simulation


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
    argv[i] = argv[i].replace("/abs/path/to/shared/data", str(data_dir)) + " " + extra
    return argv


def run_readme(
    argv: list[str], home: Path, port: int, timeout: float
) -> subprocess.CompletedProcess:
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


def test_readme_command_works_first_time_and_after_a_failed_run(
    tmp_path: Path, data_dir: Path
) -> None:
    argv = readme_run_command()
    home, port = tmp_path / "flwr-home", free_port()
    out = tmp_path / "outputs"
    try:
        # a first run that fails (a data-dir that does not exist) ...
        bad = run_readme(
            with_run_config(argv, tmp_path / "nowhere", f"outputs-dir='{out}'"), home, port, 600
        )
        # (`flwr run --stream` exits 0 even then; the log says why the ServerApp stopped)
        assert "'data-dir' (data.data_dir) = " in bad.stdout, bad.stdout[-3000:]
        # ... leaves a local SuperLink that uses this environment, not a fresh uv one
        link = local_superlink.local_superlink(str(port))
        assert link is not None and not link.installs_dependencies
        # and the README's command, as printed, then works on it
        started = time.monotonic()
        good = run_readme(
            with_run_config(
                argv, data_dir, f"num-server-rounds=2 data-subsample=0.1 outputs-dir='{out}'"
            ),
            home,
            port,
            900,
        )
        log = good.stdout + good.stderr
        assert good.returncode == 0, log[-3000:]
        assert f"under SuperLink PID {link.pid}" in log
        assert "installed the app's dependencies" not in log
        assert list(out.glob("*/results.json")), log[-3000:]
        assert not (home / local_superlink.RUNTIME_ENVS).exists()
        print(f"README command: 2 rounds in {time.monotonic() - started:.0f} s")
    finally:
        subprocess.run(
            [sys.executable, "-m", "server_app.local_superlink", "--port", str(port), "--stop"],
            cwd=REPO, capture_output=True, timeout=60,
        )  # fmt: skip
    assert local_superlink.local_superlink(str(port)) is None
