"""Run a comparison: one real ``flwr run`` of a snapshot of this app per (method, seed).

(``--engine inprocess``: the same simulation in one process per run, without Ray.)

Every run is a simulation with a private ``FLWR_HOME`` and private ports and no
dependency installation, so all methods share the models, partitions, memory profile,
selection size, local epochs and evaluation of the preset; only ``method=`` (and a
variant's own run-config, :data:`VARIANTS`) differs. A one-line progress per round is
printed while a run streams; each run writes ``<out>/runs/<method>-s<seed>/flwr.log``
and its ``results.json``, and :func:`run_all` rewrites ``<out>/manifest.json`` after
every run. :mod:`benchmarks.accuracy.report` turns the results into tables and plots;
:mod:`benchmarks.scale.nodes` and :mod:`benchmarks.speed.threads` reuse :func:`run_one`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO

from benchmarks.accuracy.variants import NEEDS, VARIANTS
from benchmarks.common.machine import machine_facts
from benchmarks.common.pool import pin, run_pooled
from benchmarks.common.revision import revision

REPO = Path(__file__).resolve().parents[2]
SNAPSHOT_SKIPS = (
    ".venv", ".git", "outputs", "__pycache__", "*.egg-info", ".pytest_cache", ".ruff_cache",
    "results", "deploy", ".flwr*", ".cache*",
)  # fmt: skip
COPY_IGNORE = shutil.ignore_patterns(*SNAPSHOT_SKIPS)
ANSI = re.compile(r"\x1b\[[0-9;]*m")
# server_app.results.round_line: round[/N] stage block elig/sel acc val-acc loss EM need meas
# down up time [left]
ROUND = re.compile(
    r"^\s*(?P<round>\d+)(?:/\d*)?\s+(?P<stage>\d+)\s+(?P<block>\d+)\s+(?P<elig>\d+)/(?P<sel>\d+)\s+"
    r"(?P<acc>\S+)\s+(?P<val>\S+)\s+(?P<loss>\S+)\s+\S+\s+(?P<need>\S+)\s+.*?\s(?P<secs>[\d.]+)s"
    r"(?:\s+\S+)?\s*$"
)


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listener_pids(port: int) -> list[int]:
    """Processes listening on ``port`` (the managed SuperLink our ``flwr run`` started)."""
    out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True)
    return [
        int(p.split("=")[1]) for p in out.stdout.replace(",", " ").split() if p.startswith("pid=")
    ]


def snapshot_app(src: Path, dst: Path) -> Path:
    """Copy the app once, so every run of the comparison uses the same code."""
    shutil.copytree(src, dst, ignore=COPY_IGNORE)
    return dst


def registered_actions(app: Path) -> set[str] | None:
    """Message types the app's ClientApp handles (None if that cannot be read)."""
    code = "import client_app.app as a; print(' '.join(sorted(a.app._registered_funcs)))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=app, capture_output=True, text=True, timeout=300
    )
    return set(out.stdout.split()) if out.returncode == 0 else None


def check_app(app: Path, methods: Sequence[str]) -> None:
    """Stop before training if a method's ClientApp handler is not registered."""
    methods = [VARIANTS.get(m, (m, ""))[0] for m in methods]
    needed = {NEEDS[m] for m in methods if m in NEEDS}
    if not needed:
        return
    have = registered_actions(app)
    missing = needed - have if have is not None else set()
    if missing:
        raise SystemExit(
            f"the ClientApp in {app} has no handler for {sorted(missing)}: "
            "client_app/app.py must register it in HANDLERS"
        )


def quote(value: str) -> str:
    """A string value for ``--run-config``."""
    return "'" + value.replace("'", "\\'") + "'"


@dataclass
class RunSpec:
    """One (method, seed) of the comparison."""

    method: str
    seed: int
    out: Path
    status: str = "pending"
    seconds: float = 0.0
    results: str = ""
    error: str = ""
    rounds_seen: int = 0
    core: int | None = None  # the CPU it ran on (``--jobs`` > 1)
    commit: str | None = None  # the app's commit, and whether its checkout had changes
    dirty: bool | None = None  # (benchmarks/common/revision.py; None outside a git checkout)

    @property
    def name(self) -> str:
        return f"{self.method}-s{self.seed}"


@dataclass
class Settings:
    """What is the same for every run."""

    preset: str
    data_dir: str
    num_supernodes: int
    extra: str
    timeout: float
    app: str
    runs: list[RunSpec] = field(default_factory=list)
    federation: str = ""  # more --federation-config, e.g. "client-resources-num-cpus=1"
    env: dict[str, str] = field(default_factory=dict)  # more environment for the run
    # "flwr": `flwr run` on a managed SuperLink (Ray); "inprocess": the same simulation in
    # one process (server_app/inprocess.py), the same results without Ray's overhead
    engine: str = "flwr"
    jobs: int = 1  # runs at once, each on one CPU with one torch thread (benchmarks/common/pool.py)
    allocator: str = "system"  # the runs' malloc (benchmarks/speed/allocator.py)


def progress(tag: str, line: str, started: float) -> bool:
    """Print a one-line progress for a round line of the log; True if it was one."""
    text = ANSI.sub("", line).split(":", 1)[-1] if ":" in line else ANSI.sub("", line)
    m = ROUND.match(text)
    if not m:
        return False
    print(
        f"{tag} round {int(m['round']):4d}  acc {m['acc']:>6}  val {m['val']:>6}  "
        f"loss {m['loss']:>7}  "
        f"nodes {m['elig']:>3}/{m['sel']:<3}  need {m['need']:>8} MB  "
        f"{float(m['secs']):5.1f} s/round  {time.monotonic() - started:7.0f} s",
        flush=True,
    )
    return True


def flwr_env(home: Path, http: int, control: int) -> dict[str, str]:
    """Environment of one ``flwr run``: its own Flower home and ports, this interpreter's
    tools first, no per-run dependency installation."""
    return dict(os.environ) | {
        "FLWR_HOME": str(home),
        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(http),
        "FLWR_LOCAL_CONTROL_API_PORT": str(control),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "RAY_DEDUP_LOGS": "0",
    }


def run_env(cfg: Settings, home: Path, http: int, control: int) -> dict[str, str]:
    """:func:`flwr_env` plus the comparison's own environment (``Settings.env``)."""
    return flwr_env(home, http, control) | cfg.env


def run_command(spec: RunSpec, cfg: Settings) -> list[str]:
    """The ``flwr run`` of one (method, seed): only method, variant config and seed differ
    (with ``engine='inprocess'``, the same run in one process)."""
    method, own = VARIANTS.get(spec.method, (spec.method, ""))
    run_config = " ".join(
        [
            f"preset={quote(cfg.preset)}",
            f"method={quote(method)}",
            own,
            f"seed={spec.seed}",
            f"outputs-dir={quote(str(spec.out))}",
            *([f"data-dir={quote(cfg.data_dir)}"] if cfg.data_dir else []),
            cfg.extra,
        ]
    ).strip()
    if cfg.engine == "inprocess":
        return [sys.executable, "-m", "server_app.inprocess",
                "--nodes", str(cfg.num_supernodes), "--run-config", run_config]  # fmt: skip
    return [
        "flwr", "run", cfg.app, "--stream", "--run-config", run_config,
        "--federation-config", f"num-supernodes={cfg.num_supernodes} {cfg.federation}".strip(),
    ]  # fmt: skip


def stream(
    proc: subprocess.Popen[str], spec: RunSpec, cfg: Settings, tag: str, log: IO[str]
) -> None:
    """Copy the run's output to its log, print progress and errors, kill it at the timeout."""
    started = time.monotonic()
    assert proc.stdout is not None
    for line in proc.stdout:
        log.write(line)
        if progress(tag, line, started):
            spec.rounds_seen += 1
        elif "ERROR" in line or "Traceback" in line:
            print(f"{tag} {ANSI.sub('', line).rstrip()}", flush=True)
        if time.monotonic() - started > cfg.timeout:
            proc.kill()
            spec.error = f"timed out after {cfg.timeout:.0f} s"
            break
    proc.wait(timeout=60)


def record_outcome(spec: RunSpec, returncode: int | None) -> None:
    """ok only if ``flwr run`` succeeded and the run wrote its summary without having
    stopped early (rounds in a row in which no node trained)."""
    found = sorted(spec.out.glob("*/results.json"))
    summary = json.loads(found[-1].read_text()).get("summary") if found else None
    stopped = (summary or {}).get("stopped")  # the engine gave up: nothing could train
    if stopped and not spec.error:
        spec.error = f"the run stopped: {stopped}"
    if returncode == 0 and summary is not None and not spec.error:
        spec.status, spec.results = "ok", str(found[-1])
    else:
        spec.status = "failed"
        spec.error = spec.error or f"flwr run exited with {returncode}; see flwr.log"
        if found:
            spec.results = str(found[-1])


def run_one(spec: RunSpec, cfg: Settings, tag: str, tmp: Path, core: int | None = None) -> None:
    """One ``flwr run`` with a private FLWR_HOME and ports, streaming progress.

    With ``core`` (``--jobs`` > 1) the run is pinned to that CPU with one torch thread.
    """
    http, control = free_port(), free_port()
    env = run_env(cfg, tmp / f"home-{spec.name}", http, control)
    if cfg.jobs > 1:
        env |= {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        spec.core = core
    cmd = run_command(spec, cfg)
    spec.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    print(f"{tag} start: {spec.method} seed {spec.seed}", flush=True)
    with open(spec.out / "flwr.log", "w") as log:
        log.write(" ".join(cmd) + "\n")
        proc = subprocess.Popen(
            cmd, env=env, cwd=cfg.app, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        pin(proc.pid, core)  # before the run's Python has started any thread
        try:
            stream(proc, spec, cfg, tag, log)
        finally:
            if proc.poll() is None:
                proc.kill()
            for pid in listener_pids(http):  # the managed SuperLink outlives `flwr run`
                os.kill(pid, signal.SIGTERM)
    spec.seconds = time.monotonic() - started
    record_outcome(spec, proc.returncode)
    print(f"{tag} {spec.status} in {spec.seconds:.0f} s {spec.error}", flush=True)


def earlier_manifest(manifest: Path, specs: Sequence[RunSpec]) -> tuple[list, list]:
    """Runs and commands of an existing manifest that this invocation does not redo.

    Runs added to an existing folder (e.g. a variant run later) keep the earlier ones.
    """
    earlier = json.loads(manifest.read_text()) if manifest.exists() else {}
    names = {spec.name for spec in specs}
    kept = [r for r in earlier.get("runs", []) if f"{r['method']}-s{r['seed']}" not in names]
    commands = earlier.get("commands", [earlier["argv"]] if "argv" in earlier else [])
    return kept, commands


def run_all(cfg: Settings, out: Path, source: Path, argv: Sequence[str]) -> list[str]:
    """Run ``cfg.runs`` on one snapshot of ``source``, ``cfg.jobs`` at a time (in the given
    order); the names of failed runs.

    ``out/manifest.json`` (settings, every command that wrote to ``out``, status of every
    run, the comparison's wall time so far, the machine it ran on and the commit of
    ``source``, per run as well, since runs kept from earlier invocations keep theirs) is
    rewritten after each run, so an interrupted comparison still says what ran, where, at
    which commit and how long it took.
    """
    manifest = out / "manifest.json"
    kept, commands = earlier_manifest(manifest, cfg.runs)
    code = revision(source, SNAPSHOT_SKIPS)  # once: the snapshot is taken once
    for spec in cfg.runs:
        spec.commit, spec.dirty = code["commit"], code["dirty"]
    commands = [*commands, list(argv)]
    methods = list(dict.fromkeys(spec.method for spec in cfg.runs))
    seeds = list(dict.fromkeys(spec.seed for spec in cfg.runs))
    with tempfile.TemporaryDirectory(prefix="profl-compare-") as tmp_name:
        tmp = Path(tmp_name)
        cfg.app = str(snapshot_app(source, tmp / "app"))
        check_app(Path(cfg.app), methods)
        print(
            f"comparing {len(methods)} methods x {len(seeds)} seeds on preset '{cfg.preset}' "
            f"with {cfg.num_supernodes} nodes -> {out}",
            flush=True,
        )
        started, lock, machine = time.monotonic(), threading.Lock(), machine_facts()

        def run_and_record(numbered: tuple[int, RunSpec], core: int | None) -> None:
            i, spec = numbered
            run_one(spec, cfg, f"[{i}/{len(cfg.runs)} {spec.name}]", tmp, core)
            with lock:
                info = asdict(cfg) | {"commands": commands, "app_source": str(source)} | code
                info["runs"] = kept + info["runs"]
                info["wall_seconds"] = round(time.monotonic() - started, 1)
                info["machine"] = machine
                manifest.write_text(json.dumps(info, indent=1, default=str))

        run_pooled(list(enumerate(cfg.runs, 1)), cfg.jobs, run_and_record)
        print(f"{len(cfg.runs)} runs in {time.monotonic() - started:.0f} s", flush=True)
    return [s.name for s in cfg.runs if s.status != "ok"]
