"""Per-client training peak of every method: estimated and CUDA-measured.

A job is one kind of local training a method sends a node: ProFL's step and
plan (``s2b1/mb16``), a width tier (``r=0.25``) or a depth tier (``k=2``),
with the memory model's estimate. Phase one lists the jobs, either those a
comparison run actually sent (read from each run's ``results.json``) or those
a preset's strategy would send each node of a simulated population (the
strategy built as the ServerApp builds it, budgets from the memory profile);
it needs Flower and Hydra. Phase two trains each job with the ClientApp's own
training loop on random batches of the run's batch size on CUDA and reads
``torch.cuda.max_memory_allocated()`` after a warm-up batch (so momentum
buffers and the cuBLAS workspace are counted once, as in training); it needs
only torch, so it runs on a GPU machine without Flower.

    python -m benchmarks.memory.methods --results benchmarks/results/cifar10_cpu --jobs-out a.json
    python -m benchmarks.memory.methods --preset paper_cifar10_resnet18 --num-nodes 100 \\
        --methods profl,fedavg,heterofl --jobs-out b.json
    python -m benchmarks.memory.methods --jobs a.json          # on a GPU

Phase two prints a Markdown table of every job and one of every method's
worst job; "model only" subtracts the cuBLAS workspace PyTorch allocates per
thread (:func:`profl_strategy.memory.model.cuda_workspace_mb`), the term the memory
model leaves to the device (see ``benchmarks/memory/model_check.py``).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.accuracy.run_files import read_results
from benchmarks.memory.plans import ResetPeakAfterFirst, steady_peak_mb
from benchmarks.memory.steps import host_batches, new_step_model
from profl_strategy.engine.step import Step
from profl_strategy.memory.model import cuda_workspace_mb
from profl_strategy.memory.plans.plan import Plan
from profl_strategy.memory.plans.train import train_with_plan
from profl_strategy.methods.baselines.depth import DepthSubModel, depth_loss, heads_for
from profl_strategy.methods.baselines.width import sub_key
from profl_strategy.models import build_full_model
from profl_strategy.task.model_key import ModelKey
from profl_strategy.task.train import train_step

WARMUP_BATCHES = 3
Found = dict[tuple[str, str], list[float]]


@dataclass(frozen=True)
class Job:
    """One kind of local training, and the largest estimate it was sent with."""

    method: str
    kind: str  # "step" | "width" | "depth:1" (a head per block) | "depth:0" (top head only)
    label: str  # s2b1/plain, r=0.25, k=2
    est_mb: float
    count: int  # node-rounds that trained it (a run), or nodes that would (a preset)


def _depth_kind(all_heads: bool) -> str:
    """``depth:1`` where a depth tier trains a head per block (DepthFL), else ``depth:0``."""
    return f"depth:{int(all_heads)}"


def _jobs(method: str, found: Found) -> list[Job]:
    return [Job(method, k, label, max(v), len(v)) for (k, label), v in sorted(found.items())]


def _run_entry(
    method: str, key: ModelKey, batch: int, weight_decay: float, jobs: list[Job]
) -> dict:
    return {
        "method": method,
        "key": [key.name, key.num_classes, list(key.input_shape), key.width, key.out_depth],
        "batch": batch,
        "weight_decay": weight_decay,
        "jobs": [asdict(j) for j in jobs],
    }


def jobs_of_run(method: str, results: dict) -> list[Job]:
    """The distinct jobs of one run's ``results.json``, from its round records."""
    from profl_strategy.methods.baselines import depth_strategies  # needs Flower: phase one

    name = str(results["config"]["method"]["strategy"]).rsplit(".", 1)[-1]
    found: Found = {}
    for r in results["rounds"]:
        for node in r.get("selected_nodes") or []:
            if "tier" in node:
                kind = "width"
                if node["tier"].startswith("k="):  # a depth tier of DepthFL / InclusiveFL
                    kind = _depth_kind(getattr(depth_strategies, name).all_heads)
                label, est = node["tier"], float(node["need_mb"])
            else:
                kind = "step"
                label = f"s{r['stage']}b{r['block']}/{node.get('plan', 'plain')}"
                est = float(node.get("plan_need_mb", r["need_mb"]))
            found.setdefault((kind, label), []).append(est)
    return _jobs(method, found)


def from_results(results_dir: Path) -> dict:
    """Key, batch size and jobs of every run under a comparison's results folder."""
    from profl_strategy.task.dataset_info import get_info  # needs flwr-datasets: phase one

    out: dict = {"source": str(results_dir), "runs": []}
    for run in json.loads((results_dir / "manifest.json").read_text())["runs"]:
        if run["status"] != "ok":
            continue
        res = read_results(Path(run["results"]))
        cfg = res["config"]
        info = get_info(cfg["dataset"]["name"])
        key = ModelKey(
            cfg["model"]["name"],
            info.num_classes,
            tuple(info.input_shape),
            float(cfg["model"]["width"]),
            int(cfg["method"]["output_depth"]),
        )
        jobs = jobs_of_run(run["method"], res)
        train = cfg["train"]
        out["runs"].append(
            _run_entry(run["method"], key, train["batch_size"], train["weight_decay"], jobs)
        )
    return out


def planned_jobs(strategy: Any, num_nodes: int, method: str) -> list[Job]:
    """Every job ``strategy`` would send nodes ``0 .. num_nodes-1`` over the whole run."""
    from profl_strategy.engine.protocol import TRAIN_WIDTH
    from profl_strategy.memory.plans.picker import PLAIN
    from profl_strategy.methods.baselines.full_model import FullModel
    from profl_strategy.methods.baselines.submodel import TieredMethod
    from profl_strategy.methods.baselines.width_strategies import AllSmall

    nodes = range(num_nodes)
    found: Found = {}
    if isinstance(strategy, TieredMethod):
        if isinstance(strategy, AllSmall):
            strategy.fix_width()
        for tier in strategy.assignments(nodes).values():
            width = strategy.order(tier, 1).message_type == TRAIN_WIDTH
            kind = "width" if width else _depth_kind(strategy.all_heads)
            found.setdefault((kind, tier.name), []).append(tier.need_mb)
        return _jobs(method, found)
    if isinstance(strategy, FullModel):
        # The whole model, to every node its round plan would make eligible: select them all.
        strategy.fraction_train = 1.0
        for a in strategy.plan_round(1, set(nodes)).assignments:
            found.setdefault(("step", f"{a.order.step}/{PLAIN}"), []).append(a.order.need_mb)
        return _jobs(method, found)
    for step in strategy.schedule.steps:
        for fit in strategy.fits(step, nodes).values():
            if fit is not None:
                found.setdefault(("step", f"{step}/{fit[0]}"), []).append(fit[1])
    return _jobs(method, found)


def from_preset(preset: str, num_nodes: int, methods: list[str], data_dir: str) -> dict:
    """Jobs every method would send a population of ``num_nodes`` simulated nodes."""
    from flwr.common.config import parse_config_args

    from benchmarks.accuracy.variants import VARIANTS
    from profl_strategy.engine.budgets import node_budget_mb
    from profl_strategy.run.config import compose_config
    from profl_strategy.run.factory import build_strategy, server_spec

    out: dict = {"source": f"preset {preset}, {num_nodes} nodes", "runs": []}
    for method in methods:
        base, own = VARIANTS.get(method, (method, ""))
        run_config = {"preset": preset, "method": base, **parse_config_args([own] if own else [])}
        if data_dir:
            run_config["data-dir"] = data_dir
        spec = server_spec(compose_config(run_config))
        run = spec.run
        key, batch = run.model, run.train.batch_size
        strategy = build_strategy(spec)
        for n in range(num_nodes):
            node = {"partition-id": n, "num-partitions": num_nodes}
            strategy.budgets[n] = node_budget_mb(node, run.memory, run.full_peak_mb, run.seed)[0]
            strategy.nodes.partition_ids[n] = n
        jobs = planned_jobs(strategy, num_nodes, method)
        out["runs"].append(_run_entry(method, key, batch, run.train.weight_decay, jobs))
        print(f"{method}: {len(jobs)} jobs", flush=True)
    return out


def _model_and_loss(key: ModelKey, job: Job) -> tuple[nn.Module, Callable, Plan | None]:
    """What the ClientApp builds for ``job`` (train.step / train.width / train.depth)."""
    if job.kind == "step":
        step_label, plan_label = job.label.split("/")
        stage, block = (int(v) for v in step_label[1:].split("b"))
        plan = None if plan_label == "plain" else Plan.from_label(plan_label)
        return new_step_model(key, Step(stage, block)), F.cross_entropy, plan
    if job.kind == "width":
        torch.manual_seed(0)
        return build_full_model(sub_key(key, float(job.label[2:])).spec()), F.cross_entropy, None
    depth = int(job.label[2:])
    heads = heads_for(depth, job.kind.endswith(":1"))
    torch.manual_seed(0)
    model = DepthSubModel(key.spec(), depth, heads)
    return model, lambda outputs, y: depth_loss(outputs, y, 1.0), None


def measure(key: ModelKey, job: Job, batch: int, weight_decay: float) -> float:
    """Steady-state CUDA peak MB of ``job``, trained as the ClientApp trains it."""
    model, loss_fn, plan = _model_and_loss(key, job)
    hyper = {
        "epochs": 1,
        "lr": 0.01,
        "momentum": 0.9,
        "weight_decay": weight_decay,
        "proximal_mu": 0.0,
        "device": torch.device("cuda"),
    }

    def train(batches: ResetPeakAfterFirst) -> None:
        if plan is not None:
            train_with_plan(model, batches, plan, **hyper)  # type: ignore[arg-type]
        else:
            train_step(model, batches, loss_fn=loss_fn, **hyper)  # type: ignore[arg-type]

    return steady_peak_mb(train, host_batches(key, batch, WARMUP_BATCHES))


def report(spec: dict, workspace_mb: float) -> list[str]:
    """Markdown tables: every job, then every method's worst job against FedAvg's."""
    lines = [
        f"device: {torch.cuda.get_device_name()}; source: {spec['source']}; "
        f"CUBLAS_WORKSPACE_CONFIG={os.environ.get('CUBLAS_WORKSPACE_CONFIG', '(default)')}; "
        f"cuBLAS workspace term {workspace_mb:.2f} MB",
        "",
        "| method | job | count | estimated MB | CUDA MB | CUDA model-only MB |",
        "|---|---|---|---|---|---|",
    ]
    worst: dict[str, tuple[float, float, float]] = {}
    for run in spec["runs"]:
        name, classes, shape, width, out_depth = run["key"]
        key = ModelKey(name, classes, tuple(shape), width, out_depth)
        for raw in run["jobs"]:
            job = Job(**raw)
            cuda = measure(key, job, run["batch"], run["weight_decay"])
            model_only = cuda - workspace_mb
            lines.append(
                f"| {job.method} | {job.kind.split(':')[0]} {job.label} | {job.count} "
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
    """Phase one (``--jobs-out``) or phase two (``--jobs``)."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--results", type=Path, help="a benchmarks.accuracy.compare results folder")
    ap.add_argument("--preset", help="conf/experiment/<preset>.yaml (planned jobs)")
    ap.add_argument("--num-nodes", type=int, default=100, help="population for --preset")
    ap.add_argument(
        "--methods",
        default="profl,profl-plans,fedavg,exclusive,allsmall,heterofl,fedrolex,depthfl,inclusivefl",
        help="for --preset",
    )
    ap.add_argument("--data-dir", default="", help="for --preset, if it needs local data")
    ap.add_argument("--jobs-out", type=Path, help="write the jobs here (phase one)")
    ap.add_argument("--jobs", type=Path, help="measure the jobs of this file on CUDA")
    ap.add_argument("--capability", default="", help="e.g. 9.0 (default: this GPU's)")
    args = ap.parse_args()
    if args.jobs_out:
        if args.results:
            spec = from_results(args.results)
        elif args.preset:
            spec = from_preset(args.preset, args.num_nodes, args.methods.split(","), args.data_dir)
        else:
            ap.error("--jobs-out needs --results or --preset")
        args.jobs_out.write_text(json.dumps(spec, indent=1))
        n = sum(len(r["jobs"]) for r in spec["runs"])
        print(f"{n} jobs of {len(spec['runs'])} methods -> {args.jobs_out}")
        return
    if not args.jobs:
        ap.error("give --jobs-out with --results or --preset, or --jobs")
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
