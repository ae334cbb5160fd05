"""A new user's first run: the README's set-up command as printed, on a fresh Flower home.

Nothing is started by hand and no Flower variable is set here: whatever the README's
command needs, it must say itself. The only changes to it are the data path, a small
run config (the shared simulation's, ``tests/e2e/conftest.py``), and private ports (so a
SuperLink the user already runs is not reused).
"""

from __future__ import annotations

import pytest

from server_app import local_superlink
from tests.support.readme import ReadmeRun

pytestmark = [pytest.mark.simulation, pytest.mark.slow]


def test_a_failed_first_run_says_why_and_leaves_a_superlink_on_this_environment(
    readme_run: ReadmeRun,
) -> None:
    # (`flwr run --stream` exits 0 even then; the log says why the ServerApp stopped)
    failed = readme_run.failed
    assert "'data-dir' (data.data_dir) = " in failed.stdout, failed.stdout[-3000:]
    # the local SuperLink it started uses this environment, not a fresh uv one
    link = readme_run.link
    assert link is not None and not link.installs_dependencies


def test_the_readme_command_as_printed_then_works(readme_run: ReadmeRun) -> None:
    log, link = readme_run.log, readme_run.link
    assert readme_run.run.returncode == 0, log[-3000:]
    assert link is not None and f"under SuperLink PID {link.pid}" in log
    assert "installed the app's dependencies" not in log
    assert len(readme_run.results) == 1, log[-3000:]
    assert not (readme_run.home / local_superlink.RUNTIME_ENVS).exists()
    print(f"README command: {len(readme_run.results[0]['rounds'])} rounds in "
          f"{readme_run.seconds:.0f} s")  # fmt: skip
