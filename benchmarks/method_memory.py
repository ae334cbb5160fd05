"""Per-client training peak of every method of a comparison run: estimated and CUDA-measured.

A comparison (``benchmarks.compare``) records, for every round, which job each
selected node was sent: ProFL's step and plan, a width tier (``r=0.25``) or a
depth tier (``k=2``), with the memory model's estimate. This script collects
the distinct jobs of every run in a results folder and trains each one, with
the ClientApp's own training loop, on random batches of the run's batch size on
CUDA, reading ``torch.cuda.max_memory_allocated()`` after a warm-up batch (so
momentum buffers and the cuBLAS workspace are counted once, as in training).

Two phases, so the measuring one needs only torch (a GPU machine without
Flower or Hydra):

    python -m benchmarks.method_memory benchmarks/results/cifar10_cpu --jobs-out jobs.json
    python -m benchmarks.method_memory --jobs jobs.json --capability 9.0   # on a GPU

The second prints one Markdown table per job and one per method (worst job);
"model only" subtracts the cuBLAS workspace PyTorch allocates per thread
(:func:`profl_strategy.memory.cuda_workspace_mb`), the term the memory model
leaves to the device (see ``benchmarks/memory_model_check.py``).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from benchmarks.plans import ResetPeakAfterFirst, host_batches, new_step_model
from client_app.plan_train import train_with_plan
from client_app.train import train_step
from profl_strategy.baselines.depth import DepthSubModel, depth_loss, heads_for
from profl_strategy.baselines.width import sub_key
from profl_strategy.memory import MB, ModelKey, cuda_workspace_mb
from profl_strategy.models import build_full_model
from profl_strategy.plans import Plan
from profl_strategy.step_model import Step

# Which heads a depth tier trains, by strategy class (DepthFL.all_heads /
# InclusiveFL.all_heads); here because depth_strategies needs Flower.
ALL_HEADS = {"DepthFL": True, "InclusiveFL": False}
WARMUP_BATCHES = 3


@dataclass(frozen=True)
class Job:
    """One kind of local training a run sent, and the largest estimate it was sent with."""

    method: str
    kind: str  # "step" | "width" | "depth"
    label: str  # s2b1 / plain, r=0.25, k=2
    est_mb: float
    nodes: int  # node-rounds that trained it


def jobs_of_run(method: str, results: dict) -> list[Job]:
    """The distinct jobs of one run's ``results.json``, from its round records."""
    strategy = str(results["config"]["method"]["strategy"]).rsplit(".", 1)[-1]
    seen: dict[tuple[str, str], list[float]] = {}
    for r in results["rounds"]:
        for node in r.get("selected_nodes") or []:
            if "tier" in node:
                kind = "depth" if node["tier"].startswith("k=") else "width"
                label, est = node["tier"], float(node["need_mb"])
            else:
                kind = "step"
                label = f"s{r['stage']}b{r['block']}/{node.get('plan', 'plain')}"
                est = float(node.get("plan_need_mb", r["need_mb"]))
            if kind == "depth":
                kind = f"depth:{int(ALL_HEADS[strategy])}"
            seen.setdefault((kind, label), []).append(est)
    return [
        Job(method, kind, label, max(ests), len(ests))
        for (kind, label), ests in sorted(seen.items())
    ]


def collect(results_dir: Path) -> dict:
    """Key, batch size and jobs of every run under a comparison's results folder."""
    from client_app.dataset import get_info  # needs flwr-datasets: phase one only

    runs = json.loads((results_dir / "manifest.json").read_text())["runs"]
    out: dict = {"source": str(results_dir), "runs": []}
    for run in runs:
        if run["status"] != "ok":
            continue
        res = json.loads(Path(run["results"]).read_text())
        cfg = res["config"]
        info = get_info(cfg["dataset"]["name"])
        key = ModelKey(
            cfg["model"]["name"],
            info.num_classes,
            tuple(info.input_shape),
            float(cfg["model"]["width"]),
            int(cfg["method"]["output_depth"]),
        )
        out["runs"].append(
            {
                "method": run["method"],
                "seed": run["seed"],
                "key": list(asdict(key).values()),
                "batch": int(cfg["train"]["batch_size"]),
                "weight_decay": float(cfg["train"]["weight_decay"]),
                "jobs": [asdict(j) for j in jobs_of_run(run["method"], res)],
            }
        )
    return out


def _model_and_loss(key: ModelKey, job: Job) -> tuple[nn.Module, Callable | None, Plan | None]:
    """What the ClientApp builds for ``job`` (train.step / train.width / train.depth)."""
    if job.kind == "step":
        step_label, plan_label = job.label.split("/")
        stage, block = (int(v) for v in step_label[1:].split("b"))
        plan = None if plan_label == "plain" else Plan.from_label(plan_label)
        return new_step_model(key, Step(stage, block)), None, plan
    if job.kind == "width":
        torch.manual_seed(0)
        return build_full_model(sub_key(key, float(job.label[2:])).spec()), None, None
    depth = int(job.label[2:])
    heads = heads_for(depth, job.kind.endswith(":1"))
    torch.manual_seed(0)
    model = DepthSubModel(key.spec(), depth, heads)
    return model, lambda outputs, y: depth_loss(outputs, y, 1.0), None


def measure(key: ModelKey, job: Job, batch: int, weight_decay: float) -> float:
    """Steady-state CUDA peak MB of ``job``, trained as the ClientApp trains it."""
    model, loss_fn, plan = _model_and_loss(key, job)
    batches = ResetPeakAfterFirst(host_batches(key, batch, WARMUP_BATCHES))
    hyper = {
        "epochs": 1,
        "lr": 0.01,
        "momentum": 0.9,
        "weight_decay": weight_decay,
        "proximal_mu": 0.0,
        "device": torch.device("cuda"),
    }
    if plan is not None and plan != Plan():
        train_with_plan(model, batches, plan, **hyper)  # type: ignore[arg-type]
    elif loss_fn is not None:
        train_step(model, batches, loss_fn=loss_fn, **hyper)  # type: ignore[arg-type]
    else:
        train_step(model, batches, **hyper)  # type: ignore[arg-type]
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / MB
    del model
    torch.cuda.empty_cache()
    return peak


def report(spec: dict, workspace_mb: float) -> list[str]:
    """Markdown tables: every job, then every method's worst job against FedAvg's."""
    lines = [
        f"device: {torch.cuda.get_device_name()}; source: {spec['source']}; "
        f"CUBLAS_WORKSPACE_CONFIG={os.environ.get('CUBLAS_WORKSPACE_CONFIG', '(default)')}; "
        f"cuBLAS workspace term {workspace_mb:.2f} MB",
        "",
        "| method | job | node-rounds | estimated MB | CUDA MB | CUDA model-only MB |",
        "|---|---|---|---|---|---|",
    ]
    worst: dict[str, tuple[float, float, float]] = {}
    for run in spec["runs"]:
        key = ModelKey(*run["key"][:2], tuple(run["key"][2]), *run["key"][3:])
        for raw in run["jobs"]:
            job = Job(**raw)
            cuda = measure(key, job, run["batch"], run["weight_decay"])
            model_only = cuda - workspace_mb
            lines.append(
                f"| {job.method} | {job.kind.split(':')[0]} {job.label} | {job.nodes} "
                f"| {job.est_mb:.2f} | {cuda:.2f} | {model_only:.2f} |"
            )
            prev = worst.get(job.method, (0.0, 0.0, 0.0))
            worst[job.method] = (
                max(prev[0], job.est_mb),
                max(prev[1], cuda),
                max(prev[2], model_only),
            )
    full = worst.get("fedavg")
    lines += [
        "",
        "| method | worst est. MB | worst CUDA MB | worst CUDA model-only MB "
        "| vs FedAvg (est.) | vs FedAvg (CUDA) | vs FedAvg (CUDA model-only) |",
        "|---|---|---|---|---|---|---|",
    ]
    for method, (est, cuda, model_only) in worst.items():
        rel = [
            f"{v / f - 1:+.1%}" if full else "-"
            for v, f in zip((est, cuda, model_only), full or (1.0, 1.0, 1.0), strict=True)
        ]
        lines.append(
            f"| {method} | {est:.2f} | {cuda:.2f} | {model_only:.2f} | {' | '.join(rel)} |"
        )
    return lines


def main() -> None:
    """Write the jobs of a results folder, or measure a jobs file on CUDA."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("results", nargs="?", type=Path, help="a benchmarks.compare results folder")
    ap.add_argument("--jobs-out", type=Path, help="write the jobs of RESULTS here (phase one)")
    ap.add_argument("--jobs", type=Path, help="measure the jobs in this file on CUDA")
    ap.add_argument("--capability", default="", help="e.g. 9.0 (default: this GPU's)")
    args = ap.parse_args()
    if args.jobs_out:
        if args.results is None:
            ap.error("--jobs-out needs a results folder")
        spec = collect(args.results)
        args.jobs_out.write_text(json.dumps(spec, indent=1))
        n = sum(len(r["jobs"]) for r in spec["runs"])
        print(f"{n} jobs of {len(spec['runs'])} runs -> {args.jobs_out}")
        return
    if not args.jobs:
        ap.error("give RESULTS with --jobs-out, or --jobs")
    if not torch.cuda.is_available():
        raise SystemExit("--jobs measures on CUDA; no CUDA device is visible here")
    if args.capability:
        major, minor = (int(v) for v in args.capability.split("."))
    else:
        major, minor = torch.cuda.get_device_capability()
    workspace = cuda_workspace_mb((major, minor), os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    print("\n".join(report(json.loads(args.jobs.read_text()), workspace)))


if __name__ == "__main__":
    main()
