"""How close the memory model comes to recorded CUDA peaks, with the cuBLAS term.

Reads a table written by ``python -m benchmarks.memory.plans`` on a GPU (estimates
and ``torch.cuda.max_memory_allocated`` side by side) and prints, for the
full model, ProFL's worst step and the worst step with plans, and then for
every (step, plan) row: estimate, estimate + cuBLAS workspace
(:func:`profl_strategy.memory.model.cuda_workspace_mb`), measured, and the error.
No GPU is needed: it re-reads recorded measurements.

    python -m benchmarks.memory.model_check \\
        benchmarks/results/plans_cuda_h100/default.md --capability 9.0
    python -m benchmarks.memory.model_check \\
        benchmarks/results/plans_cuda_h100/small_cublas_ws.md --capability 9.0 \\
        --cublas-config :16:8
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from profl_strategy.memory.model import cuda_workspace_mb

MODELS = ("resnet", "vgg", "cnn", "vit")


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _mb(cell: str) -> float | None:
    """``'134.2 (+50.6%)'`` or ``'134.2'`` -> 134.2; ``'-'`` -> None."""
    head = cell.split(" ")[0]
    try:
        return float(head)
    except ValueError:
        return None


def read_tables(path: Path) -> tuple[list[list[str]], list[list[str]]]:
    """Summary rows (model, batch, full est., full CUDA, ...) and per-step rows."""
    summary, detail = [], []
    for line in path.read_text().splitlines():
        c = _cells(line)
        if len(c) < 10 or not c[0].startswith(MODELS):
            continue
        (detail if c[2][:1] == "s" and c[2][1:2].isdigit() else summary).append(c)
    return summary, detail


def error(est: float, workspace: float, measured: float) -> float:
    """Relative error of the prediction ``est + workspace`` against ``measured``."""
    return (est + workspace) / measured - 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("table", type=Path, help="output of benchmarks.memory.plans run on CUDA")
    ap.add_argument("--capability", default="9.0", help="compute capability, e.g. 9.0")
    ap.add_argument("--cublas-config", default="", help="CUBLAS_WORKSPACE_CONFIG of the run")
    ap.add_argument("--tolerance", type=float, default=0.15)
    args = ap.parse_args()
    major, minor = (int(v) for v in args.capability.split("."))
    ws = cuda_workspace_mb((major, minor), args.cublas_config)
    summary, detail = read_tables(args.table)
    print(f"{args.table}: cuBLAS workspace term {ws:.2f} MB (capability {args.capability}, ")
    print(f"CUBLAS_WORKSPACE_CONFIG={args.cublas_config or 'unset'})\n")
    print("| model | batch | what | est. MB | est. + cuBLAS MB | CUDA MB | error |")
    print("|---|---|---|---|---|---|---|")
    what = {2: "full model", 4: "ProFL worst step", 6: "worst step with plans"}
    for c in summary:
        for col, name in what.items():
            est, cuda = _mb(c[col]), _mb(c[col + 1])
            if est is not None and cuda:
                print(
                    f"| {c[0]} | {c[1]} | {name} | {est:.1f} | {est + ws:.1f} | {cuda:.1f} "
                    f"| {error(est, ws, cuda):+.1%} |"
                )
    errors = []
    print("\n| model | batch | step | plan | est. MB | est. + cuBLAS MB | CUDA MB | error |")
    print("|---|---|---|---|---|---|---|---|")
    for c in detail:
        for label, est, cuda in (("plain", c[5], c[7]), (c[3], c[6], c[9])):
            e, m = _mb(est), _mb(cuda)
            if e is None or not m:
                continue
            errors.append(error(e, ws, m))
            print(
                f"| {c[0]} | {c[1]} | {c[2]} | {label} | {e:.1f} | {e + ws:.1f} | {m:.1f} "
                f"| {errors[-1]:+.1%} |"
            )
    if errors:
        inside = sum(abs(x) <= args.tolerance for x in errors)
        print(
            f"\n{inside} of {len(errors)} step/plan predictions within "
            f"{args.tolerance:.0%}; median error {statistics.median(errors):+.1%}, "
            f"range {min(errors):+.1%} .. {max(errors):+.1%}"
        )


if __name__ == "__main__":
    main()
