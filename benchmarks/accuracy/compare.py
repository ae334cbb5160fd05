"""Compare ProFL with its baselines: methods x seeds on one setting, then a table and plots.

Every (method, seed) is a real ``flwr run`` of this app (simulation, one private
``FLWR_HOME`` and private ports per run, no dependency installation), so all
methods share the models, partitions, memory profile, selection size, local
epochs and evaluation of the preset; only ``method=`` differs. A one-line
progress per round is printed while a run streams. Everything lands in
``--out``::

    runs/<method>-s<seed>/flwr.log        the run's streamed log
    runs/<method>-s<seed>/<run>/results.json
    table.md, table.csv                   one row per method (mean and std over seeds)
    runs.csv                              one row per run
    accuracy.png                          accuracy per round (mean, min-max band over seeds)
    accuracy_compute.png                  accuracy against client updates and round time
    accuracy_bytes.png                    accuracy against MB sent down and up
    memory.png, participation.png         worst per-client peak; eligible/trained nodes
    manifest.json                         command line, settings, status of every run

Example::

    python -m benchmarks.accuracy.compare --preset cifar10_cpu \\
        --methods profl,fedavg,exclusive,allsmall,heterofl,fedrolex,depthfl,inclusivefl \\
        --seeds 0 --data-dir ../shared/data --out benchmarks/results/cifar10-cpu

``--jobs 2 --engine inprocess`` runs two at a time, one per CPU (how the README's
comparisons ran on 2 cores). ``--allocator`` picks the runs' ``malloc``
(:mod:`benchmarks.speed.allocator`: tcmalloc where installed; same results, less time).
``--report-only`` rebuilds the table and plots from the ``results.json`` files of an
existing ``--out``. This module is the command line only:
:mod:`benchmarks.accuracy.runner` runs the comparison, :mod:`benchmarks.accuracy.report`
writes the tables, plots and README section.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.accuracy.report import report, update_readme
from benchmarks.accuracy.runner import REPO, RunSpec, Settings, run_all
from benchmarks.accuracy.variants import VARIANTS
from benchmarks.common.pool import pick_cores
from benchmarks.speed import allocator

DEFAULT_METHODS = "profl,fedavg,exclusive,allsmall,heterofl,fedrolex,depthfl,inclusivefl"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="cifar10_cpu", help="conf/experiment/<preset>.yaml")
    p.add_argument(
        "--methods",
        default=DEFAULT_METHODS,
        help=f"comma-separated conf/method names or variants ({', '.join(VARIANTS)})",
    )
    p.add_argument("--seeds", default="0", help="comma-separated seeds")
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    p.add_argument(
        "--out", default="", help="result folder (default benchmarks/results/<preset>-<time>)"
    )
    p.add_argument("--num-supernodes", type=int, default=20)
    p.add_argument(
        "--engine",
        choices=("flwr", "inprocess"),
        default="flwr",
        help="flwr: `flwr run` on Ray; inprocess: the same simulation in one process, "
        "same results, less overhead (server_app/inprocess.py)",
    )
    p.add_argument(
        "--extra-run-config", default="", help='more run-config, e.g. "num-server-rounds=5"'
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs at once (--engine inprocess), each pinned to a CPU of its own with one "
        "torch thread; list the longest methods first",
    )
    p.add_argument(
        "--allocator",
        choices=allocator.CHOICES,
        default="auto",
        help="malloc of every run: auto takes tcmalloc or jemalloc where installed (same "
        "results, less time on the CPU), else the system's (benchmarks/speed/allocator.py)",
    )
    p.add_argument("--timeout", type=float, default=3600, help="seconds per run")
    p.add_argument(
        "--app", default=str(REPO), help="the Flower app to run (default: this checkout)"
    )
    p.add_argument("--report-only", action="store_true", help="only rebuild tables and plots")
    p.add_argument(
        "--readme",
        default="",
        help="README whose <!-- compare:<out folder> --> section is rewritten from the results",
    )
    return p.parse_args(argv)


def check_methods(methods: Sequence[str]) -> None:
    """Stop before anything runs if a method is neither in conf/method nor a variant."""
    available = {p.stem for p in (REPO / "conf" / "method").glob("*.yaml")}
    unknown = [m for m in methods if m not in available | set(VARIANTS)]
    if unknown:
        raise SystemExit(f"unknown methods {unknown}; available: {sorted(available)}")


def check_jobs(jobs: int, engine: str) -> None:
    """Stop before anything runs if ``--jobs`` cannot give each run a CPU of its own."""
    if jobs > 1 and engine != "inprocess":
        raise SystemExit(
            f"--jobs {jobs} needs --engine inprocess: under `flwr run` each run's Ray "
            "starts actors on every CPU, so concurrent runs would share cores"
        )
    try:
        pick_cores(jobs)
    except ValueError as e:
        raise SystemExit(str(e)) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Run every (method, seed), then write the report; non-zero exit if a run failed."""
    args = parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out or REPO / "benchmarks" / "results" / f"{args.preset}-{stamp}").resolve()
    if args.report_only:
        ok = bool(report(out, methods))
        if ok and args.readme:
            update_readme(Path(args.readme), out)
        return 0 if ok else 1
    check_methods(methods)
    check_jobs(args.jobs, args.engine)
    malloc, library = allocator.resolve(args.allocator)
    data_dir = str(Path(args.data_dir).expanduser().resolve()) if args.data_dir else ""
    out.mkdir(parents=True, exist_ok=True)
    cfg = Settings(
        args.preset, data_dir, args.num_supernodes, args.extra_run_config, args.timeout, ""
    )
    cfg.engine, cfg.jobs = args.engine, args.jobs
    cfg.allocator = malloc
    cfg.env |= allocator.preload_env(library)
    print(f"allocator: {malloc}" + (f" ({library})" if library else ""), flush=True)
    cfg.runs = [RunSpec(m, s, out / "runs" / f"{m}-s{s}") for m in methods for s in seeds]
    command = sys.argv if argv is None else ["benchmarks/accuracy/compare.py", *argv]
    failed = run_all(cfg, out, Path(args.app).resolve(), command)
    if report(out, methods) and args.readme:
        update_readme(Path(args.readme), out)
    if failed:
        print(f"failed runs: {', '.join(failed)} (see their flwr.log)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
