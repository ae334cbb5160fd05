"""Seconds per simulated round with and without torch threads pinned per Ray actor.

Each case is a real ``flwr run`` of a snapshot of this app (the comparison's runner,
:func:`benchmarks.accuracy.runner.run_one`) on the same preset, nodes, seed and rounds:

- ``1 actor x 2 threads``: Flower's default ``client-resources-num-cpus=2`` on 2 cores;
- ``2 actors x 2 threads``: ``client-resources-num-cpus=1`` with every actor's torch forced
  to 2 threads (``PROFL_TORCH_THREADS=2``): the oversubscription the ``pin_threads`` mod
  prevents, i.e. the state before it;
- ``2 actors x 1 thread``: ``client-resources-num-cpus=1`` with the mod pinning each actor
  to the one CPU Ray gave it.

Example (run alone on the machine; timings of a shared machine mean nothing)::

    python -m benchmarks.speed.threads --rounds 8 --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from benchmarks.accuracy.runner import REPO, RunSpec, Settings, run_one, snapshot_app
from profl_strategy.task.cpus import usable_cpus

CASES = {  # name: (more --federation-config, more environment)
    "1 actor x 2 threads (num-cpus=2, Flower's default)": ("client-resources-num-cpus=2", {}),
    "2 actors x 2 threads (num-cpus=1, unpinned)": (
        "client-resources-num-cpus=1",
        {"PROFL_TORCH_THREADS": "2"},
    ),
    "2 actors x 1 thread (num-cpus=1, pinned)": ("client-resources-num-cpus=1", {}),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--nodes", type=int, default=20)
    p.add_argument("--preset", default="laptop")
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--extra-run-config", default="eval-every=1000", help="more run-config")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/threads"))
    p.add_argument("--timeout", type=float, default=3600)
    args = p.parse_args()
    out, rows = args.out.resolve(), []
    with tempfile.TemporaryDirectory(prefix="profl-threads-") as tmp_name:
        tmp = Path(tmp_name)
        app = snapshot_app(REPO, tmp / "app")
        for i, (case, (federation, env)) in enumerate(CASES.items()):
            extra = f"num-server-rounds={args.rounds} {args.extra_run_config}".strip()
            cfg = Settings(args.preset, str(Path(args.data_dir).resolve()), args.nodes, extra,
                           args.timeout, str(app), federation=federation, env=env)  # fmt: skip
            spec = RunSpec("profl", 0, out / f"case{i}")
            run_one(spec, cfg, f"[{case}]", tmp)
            data = json.loads(Path(spec.results).read_text()) if spec.results else {}
            secs = [r["round_s"] for r in data.get("rounds", []) if "round_s" in r]
            rows.append({
                "case": case, "status": spec.status,
                "round1_s": round(secs[0], 1) if secs else None,
                "median_s_per_round_after_1": round(statistics.median(secs[1:]), 1)
                if len(secs) > 1 else None,
                "wall_s": round(spec.seconds, 1),
            })  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    (out / "threads.json").write_text(json.dumps(rows, indent=1))
    print(f"{usable_cpus()} usable CPUs, preset {args.preset}, {args.nodes} nodes\n")
    print("| case | status | round 1 s | median s/round (2..) | wall s |\n|---|---|---|---|---|")
    keys = ("case", "status", "round1_s", "median_s_per_round_after_1", "wall_s")
    for r in rows:
        print("| " + " | ".join(str(r[k]) for k in keys) + " |")


if __name__ == "__main__":
    main()
