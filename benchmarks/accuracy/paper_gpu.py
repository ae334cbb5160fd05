"""Paper-scale runs without Ray or a SuperLink: the real ServerApp and ClientApp code, in-process.

The lent GPU machine has torch but no Flower simulation engine. This script runs
:func:`server_app.app.run_profl` on an in-process grid (:func:`server_app.inprocess.simulate`)
(the app's own ClientApp, mods included, one node at a time on the one GPU), each
method time-boxed, and then measures the CUDA peaks of the fine splits with and
without plans (:mod:`benchmarks.memory.plans`). On a CPU box the same script runs end to
end on a tiny setting (``tests/integration/test_paper_gpu.py``). Example, on the GPU machine::

    python -m benchmarks.accuracy.paper_gpu --preset paper_cifar10_resnet18 \\
        --methods profl,fedavg --minutes 3 --data-dir gpu_data --out $OUT \\
        --peaks resnet18_fine --peaks-batch 64

writes ``paper_gpu.md`` (device, per method: rounds, final/best accuracy, seconds),
``curves.csv`` (accuracy per evaluated round), each run's ``results.json`` and, with
``--peaks``, ``peaks.md`` (the plans benchmark's table: estimated and CUDA-measured MB).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from flwr.common.config import parse_config_args

from server_app.inprocess import simulate


def device_name() -> str:
    """The accelerator the ClientApp trains on (it picks CUDA when there is one)."""
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def run_method(args: argparse.Namespace, method: str) -> dict:
    """One time-boxed in-process run of ``method``; its summary and accuracy curve."""
    config = {
        "preset": args.preset,
        "method": method,
        "seed": args.seed,
        "outputs-dir": str(args.out / "runs"),
        "checkpoint-every": 0,
        **({"data-dir": str(Path(args.data_dir).resolve())} if args.data_dir else {}),
        **(parse_config_args([args.extra_run_config]) if args.extra_run_config else {}),
    }
    started = time.monotonic()
    summary = simulate(config, args.nodes, deadline=started + 60 * args.minutes)
    results = json.loads((Path(summary["run_dir"]) / "results.json").read_text())
    curve = [(r["round"], r["accuracy"]) for r in results["rounds"] if "accuracy" in r]
    return {
        "method": method,
        "rounds": summary["rounds"],
        "final_accuracy": summary["final_accuracy"],
        "best_accuracy": max((a for _, a in curve), default=float("nan")),
        "seconds": round(time.monotonic() - started, 1),
        "worst_peak_mb_est": summary["worst_peak_mb_est"],
        "curve": curve,
    }


def write_report(args: argparse.Namespace, rows: list[dict]) -> None:
    """``paper_gpu.md`` and ``curves.csv`` in ``--out``."""
    lines = [
        f"device: {device_name()}; preset {args.preset}, {args.nodes} nodes, seed {args.seed}, "
        f"at most {args.minutes:g} min per method; extra run-config: "
        f"{args.extra_run_config or '-'}",
        "",
        "| method | rounds | final acc | best acc | seconds | worst node peak MB (est.) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['rounds']} | {r['final_accuracy']:.4f} | "
            f"{r['best_accuracy']:.4f} | {r['seconds']:.0f} | {r['worst_peak_mb_est']} |"
        )
    (args.out / "paper_gpu.md").write_text("\n".join(lines) + "\n")
    with open(args.out / "curves.csv", "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["method", "round", "accuracy"])
        for r in rows:
            out.writerows((r["method"], rnd, acc) for rnd, acc in r["curve"])


def measure_peaks(args: argparse.Namespace) -> None:
    """The plans benchmark on the fine splits: estimates, and CUDA peaks on a GPU."""
    cmd = [sys.executable, "-m", "benchmarks.memory.plans", "--models", args.peaks,
           "--batches", str(args.peaks_batch), "--width", str(args.peaks_width)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    text = f"`{' '.join(cmd[1:])}` on {device_name()} (exit {done.returncode})\n\n{done.stdout}"
    (args.out / "peaks.md").write_text(
        text + (f"\n{done.stderr[-4000:]}" if done.returncode else "")
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="paper_cifar10_resnet18")
    p.add_argument("--methods", default="profl,fedavg")
    p.add_argument("--nodes", type=int, default=100)
    p.add_argument("--minutes", type=float, default=3.0, help="time box per method")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default="")
    p.add_argument("--extra-run-config", default="", help='e.g. "eval-every=5 data-subsample=0.5"')
    p.add_argument("--peaks", default="", help="models for the CUDA peaks, e.g. resnet18_fine")
    p.add_argument("--peaks-batch", type=int, default=64)
    p.add_argument("--peaks-width", type=float, default=1.0)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/paper_gpu"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for method in (m.strip() for m in args.methods.split(",") if m.strip()):
        rows.append(run_method(args, method))
        write_report(args, rows)  # after each method: a cut-off call keeps what finished
        print(f"{method}: {rows[-1]['rounds']} rounds, final {rows[-1]['final_accuracy']:.4f}, "
              f"{rows[-1]['seconds']:.0f} s", flush=True)  # fmt: skip
    if args.peaks:
        measure_peaks(args)
    print((args.out / "paper_gpu.md").read_text(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
