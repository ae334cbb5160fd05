"""The managed local SuperLink that ``flwr run .`` starts, and how it was started.

``flwr run .`` starts a detached ``flower-superlink`` the first time and reuses it
for every later run, with the environment it was started in. One started without
``FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1`` installs the app's dependencies
with ``uv sync`` into a fresh environment for every run (torch included, several
GB); one started from another virtual environment keeps running that one's
packages. Neither shows in Flower's own output, so the ServerApp says it at start
(:func:`startup_notes`) and ``python -m server_app.local_superlink [--stop]``
shows or stops it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

DISABLE_INSTALL = "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"
PORT_VAR = "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT"
DEFAULT_PORT = "39091"  # flwr.cli.constant.LOCAL_SUPERLINK_HTTP_API_PORT's default
RUNTIME_ENVS = "runtime-envs"  # flwr's folder of per-run `uv sync` environments


@dataclass(frozen=True)
class SuperLink:
    """A running ``flower-superlink`` process, as ``/proc`` shows it."""

    pid: int
    argv: tuple[str, ...]
    env: dict[str, str]

    @property
    def port(self) -> str:
        return _flag(self.argv, "--port") or ""

    @property
    def installs_dependencies(self) -> bool:
        """True if every run gets a fresh ``uv sync`` environment."""
        if "--disable-runtime-dependency-installation" in self.argv:
            return False
        return self.env.get(DISABLE_INSTALL) != "1"

    @property
    def python(self) -> str:
        """The interpreter the SuperLink, and so every run, uses."""
        exe = Path(self.argv[0]) if self.argv else Path()
        return str(Path(self.env.get("VIRTUAL_ENV", exe.parent.parent)) / "bin" / "python")

    @property
    def stop_command(self) -> str:
        return f"kill {self.pid}"


def _flag(argv: tuple[str, ...], name: str) -> str | None:
    for i, arg in enumerate(argv[:-1]):
        if arg == name:
            return argv[i + 1]
    return None


def _read(pid: int) -> SuperLink | None:
    """The SuperLink with this PID, or None if the PID is something else (or gone)."""
    try:
        argv = tuple(Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1])
        raw = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    except OSError:
        return None
    if not any(Path(a).name == "flower-superlink" for a in argv[:2]):
        return None
    env = dict(kv.split("=", 1) for kv in raw.split("\0") if "=" in kv)
    return SuperLink(pid, argv, env)


def _parent(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[1])


def superlink_above(pid: int | None = None) -> SuperLink | None:
    """The SuperLink this process runs under (ServerApp → SuperExec → SuperLink)."""
    pid = pid or os.getpid()
    while pid > 1:
        link = _read(pid)
        if link is not None:
            return link
        pid = _parent(pid)
    return None


def local_superlink(port: str | None = None) -> SuperLink | None:
    """The managed local SuperLink on ``port`` (Flower's default, or ``$PORT_VAR``)."""
    port = port or os.environ.get(PORT_VAR, DEFAULT_PORT)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            link = _read(int(entry.name))
            if link is not None and "--simulation" in link.argv and link.port == port:
                return link
    return None


def runtime_env() -> Path | None:
    """The per-run ``uv sync`` environment this process runs in, if any."""
    venv = os.environ.get("VIRTUAL_ENV", "")
    return Path(venv) if RUNTIME_ENVS in Path(venv).parts else None


def startup_notes() -> tuple[str, str | None]:
    """What the ServerApp's first log lines say: where it runs, and a warning if it pays.

    Returns the info line and, when the run pays a per-run dependency install,
    a warning that names the SuperLink's PID and the command that fixes it.
    """
    link = superlink_above()
    where = f"ServerApp runs {sys.executable}"
    if link is not None:
        where += f" under SuperLink PID {link.pid} (stop it: {link.stop_command})"
    env = runtime_env()
    if env is None:
        return where, None
    pid = f"PID {link.pid}" if link else "that SuperLink"
    stop = link.stop_command if link else "python -m server_app.local_superlink --stop"
    return where, (
        f"this run installed the app's dependencies into a fresh environment ({env}) because "
        f"the local SuperLink ({pid}) was started without {DISABLE_INSTALL}=1; every run "
        f"will pay that again. Stop it ({stop}), then run the README's command, which uses "
        "the environment you installed the app into."
    )


def main(argv: list[str] | None = None) -> int:
    """Show the local SuperLink (PID, Python, dependency installation) or stop it."""
    parser = argparse.ArgumentParser(prog="python -m server_app.local_superlink")
    parser.add_argument("--port", help=f"its HTTP port (default: ${PORT_VAR} or {DEFAULT_PORT})")
    parser.add_argument("--stop", action="store_true", help="stop it (SIGTERM)")
    args = parser.parse_args(argv)
    link = local_superlink(args.port)
    if link is None:
        print("no local SuperLink is running; `flwr run .` starts one")
        return 0
    installs = "on (a fresh uv environment per run)" if link.installs_dependencies else "off"
    print(
        f"local SuperLink PID {link.pid} on port {link.port}\n"
        f"  python: {link.python}\n  runtime dependency installation: {installs}"
    )
    if args.stop:
        os.kill(link.pid, signal.SIGTERM)
        for _ in range(50):
            if _read(link.pid) is None:
                break
            time.sleep(0.1)
        print(f"stopped PID {link.pid}; the next `flwr run .` starts a fresh one")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
