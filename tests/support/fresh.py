"""Python code run in a fresh interpreter from the checkout's root (nothing imported yet)."""

from __future__ import annotations

import subprocess
import sys

from tests.support.paths import REPO


def run_fresh(
    code: str, *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``python -c code *args`` in the checkout's root; output captured, never raising on
    its exit status (the caller asserts on it, with the output to show)."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
