"""How the ServerApp scales with the number of simulated SuperNodes: RSS and seconds per round.

Each size is a real ``flwr run`` of a snapshot of this app (the comparison's runner,
:func:`benchmarks.accuracy.runner.run_one`), with a private Flower home and ports. While it
runs, the resident memory of the process that hosts the ServerApp in simulation
(``flwr-simulation``, which also drives Ray) is sampled every second. Example::

    python -m benchmarks.scale.nodes --nodes 20,1000 --rounds 3 --data-dir ../shared/data

prints one row per size: peak RSS of the ServerApp process, median seconds per round
(round 1, its nodes' first call, separately) and the run's wall time (with the budget
query to every node before round 1).
A run that did not finish, or stopped because it could not learn (a split of the data
the partitioner cannot make, rounds without a usable reply), is ``failed``, and why is
printed under the table (docs/scale.md).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.accuracy.runner import ANSI, REPO, RunSpec, Settings, run_one, snapshot_app

# The last line of a Python traceback: the exception that ended the ServerApp.
EXCEPTION = re.compile(r"^\s*(?:[\w.]+\.)?(\w+(?:Error|Exception)): (.+)$")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _serverapp_pids(home: Path) -> list[int]:
    """``flwr-simulation`` processes whose Flower home is ``home``."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            env = (proc / "environ").read_bytes()
        except OSError:
            continue
        if any(a.endswith(b"flwr-simulation") for a in argv[:2]) and (
            f"FLWR_HOME={home}".encode() in env.split(b"\0")
        ):
            pids.append(int(proc.name))
    return pids


def outcome(spec: RunSpec, summary: dict) -> tuple[str, str]:
    """A run's status in the table and why it is not ``ok``: ``failed`` also when it
    finished but stopped because it could not learn (its summary's ``stopped``)."""
    if spec.status == "ok" and not summary.get("stopped"):
        return "ok", ""
    if summary.get("stopped"):
        return "failed", f"stopped: {summary['stopped']}"
    return "failed", why_failed(spec)


def why_failed(spec: RunSpec) -> str:
    """The exception that ended the run's ServerApp (from ``flwr.log``), else what the
    runner saw (a timeout, an exit status)."""
    log = spec.out / "flwr.log"
    lines = ANSI.sub("", log.read_text(errors="replace")).splitlines() if log.exists() else []
    found = [m for m in map(EXCEPTION.match, lines) if m]
    return f"{found[-1][1]}: {found[-1][2]}" if found else spec.error


class RssSampler(threading.Thread):
    """Largest RSS of the ServerApp process of one run, sampled every ``every`` seconds."""

    def __init__(self, home: Path, every: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.home, self.every, self.peak_mb = home, every, 0.0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            for pid in _serverapp_pids(self.home):
                try:
                    self.peak_mb = max(self.peak_mb, _rss_mb(pid))
                except OSError:
                    pass
            self._done.wait(self.every)

    def stop(self) -> None:
        self._done.set()
        self.join()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nodes", default="20,1000", help="comma-separated numbers of SuperNodes")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--preset", default="laptop")
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--extra-run-config", default="", help='more run-config, e.g. "eval-every=10"')
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/scale"))
    p.add_argument("--timeout", type=float, default=7200)
    args = p.parse_args()
    out = args.out.resolve()
    rows = []
    with tempfile.TemporaryDirectory(prefix="profl-scale-") as tmp_name:
        tmp = Path(tmp_name)
        app = snapshot_app(REPO, tmp / "app")
        for n in (int(v) for v in args.nodes.split(",")):
            extra = f"num-server-rounds={args.rounds} {args.extra_run_config}".strip()
            cfg = Settings(args.preset, str(Path(args.data_dir).resolve()), n, extra,
                           args.timeout, str(app))  # fmt: skip
            spec = RunSpec("profl", 0, out / f"n{n}")  # the preset's method; seed 0
            sampler = RssSampler(tmp / f"home-{spec.name}")
            sampler.start()
            started = time.monotonic()
            run_one(spec, cfg, f"[{n} nodes]", tmp)
            sampler.stop()
            data = json.loads(Path(spec.results).read_text()) if spec.results else {}
            spec.status, why = outcome(spec, data.get("summary", {}))
            secs = [r["round_s"] for r in data.get("rounds", []) if "round_s" in r]
            rows.append({
                "nodes": n, "status": spec.status, "rss_peak_mb": round(sampler.peak_mb, 1),
                "round1_s": round(secs[0], 1) if secs else None,
                "median_s_per_round_after_1": round(statistics.median(secs[1:]), 1)
                if len(secs) > 1 else None,
                "selected_per_round": [r.get("selected") for r in data.get("rounds", [])],
                "wall_s": round(time.monotonic() - started, 1), "why": why,
            })  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    (out / "scale.json").write_text(json.dumps(rows, indent=1))
    print("| nodes | status | ServerApp RSS peak MB | round 1 s | median s/round (2..) | "
          "selected/round | wall s |\n|---|---|---|---|---|---|---|")  # fmt: skip
    keys = ("nodes", "status", "rss_peak_mb", "round1_s", "median_s_per_round_after_1",
            "selected_per_round", "wall_s")  # fmt: skip
    for r in rows:
        print("| " + " | ".join(str(r[k]) for k in keys) + " |")
    for r in rows:
        if r["why"]:
            print(f"\n{r['nodes']} nodes {r['status']}: {r['why']}")


if __name__ == "__main__":
    main()
