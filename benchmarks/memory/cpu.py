"""Measured against predicted peak memory of training calls on the CPU, one fresh process a row.

Each row is what a node's train call does once its data is loaded
(:func:`client_app.step.fit_step`, :func:`client_app.baselines.fit_width`,
:func:`client_app.baselines.fit_depth`): build the sub-model from the received
arrays, train two batches, make the reply's arrays. A fresh process prepares
itself as a node does (:func:`profl_strategy.memory.runtime.prepare_process`), holds
the received arrays, then measures the call with
:class:`profl_strategy.memory.peak.PeakMeter` (resident high-water over the idle
process). "predicted" is what selection holds the call to: the plan's
estimate (:func:`~profl_strategy.memory.plans.memory.estimate_plan`), the full
model's or the sub-model's, plus the CPU allowance
(:data:`profl_strategy.memory.runtime.CPU_CALL_ALLOWANCE_MB`), which a node takes off
its budget with its data (``client_app.node.call_overhead_mb``). The data
partition is not in a row: it is the node's own, known only there.

Rows: every stage-1 and stage-2 step of each model, width and batch, plain and
with each plan technique a CPU node is offered (a micro-batch of a quarter of
the batch, checkpointing, fused updates), the plans ``PlanPicker`` hands a CPU
node for the FedRolex budgets, the full model and the baselines' sub-models
(widths 1/2, 1/4, 1/8 and AllSmall's 1/16; depth 1..B). An offloaded prefix and
host momentum move memory to the host, which on a CPU is the device: they are
not offered to CPU nodes and have no rows.

    python -m benchmarks.memory.cpu --models cnn --widths 0.25,1 --batches 16,64 \\
        --out benchmarks/results/cpu_memory/rows.jsonl --shard 0/4 --jobs 2
    python -m benchmarks.memory.cpu --table benchmarks/results/cpu_memory/rows.jsonl
    python -m benchmarks.memory.cpu --models resnet18 --widths 1 --batches 64 --plans-for 0.3 \\
        --out benchmarks/results/cpu_memory/plans30.jsonl  # the headline's plan rows
    python -m benchmarks.memory.cpu --rows-from benchmarks/results/cpu_memory/rows.jsonl \\
        --shard 0/4 --out benchmarks/results/cpu_memory/rows_again.jsonl

Rows already in ``--out`` are skipped (resumable); ``--shard i/n`` takes every
n-th row from the i-th, so parts can run on different days or machines.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

MODELS = {"cnn": (1, 28, 28), "resnet18": (3, 32, 32), "resnet34": (3, 32, 32),
          "vgg16": (3, 32, 32), "vit": (3, 32, 32)}  # fmt: skip
FEDROLEX_LEVELS = (1.0, 0.75, 0.55, 0.4, 0.3)
SUB_WIDTHS = (0.5, 0.25, 0.125, 0.0625)


def rows(model: str, width: float, batch: int) -> Iterator[str]:
    """Row ids ``model:width:batch:target:plan`` for one configuration."""
    from profl_strategy.memory.model import estimate_full
    from profl_strategy.memory.plans.picker import PlanPicker
    from profl_strategy.methods.profl.schedule import progressive_steps
    from profl_strategy.task.model_key import ModelKey

    key = ModelKey(model, 10, MODELS[model], width)
    blocks = key.spec().num_blocks
    picker = PlanPicker(key, batch, "exact", 4)
    budgets = [lv * estimate_full(key, batch).total_mb for lv in FEDROLEX_LEVELS]
    head = f"{model}:{width:g}:{batch}"
    yield f"{head}:full:plain"
    for r in SUB_WIDTHS:
        yield f"{head}:w{r:g}:plain"
    for d in range(1, blocks + 1):
        yield f"{head}:d{d}:plain"
    for step in progressive_steps(blocks):
        singles = ["plain", f"mb{batch // 4}", "ckpt", "fused"]
        picked = [f[0] for b in budgets if (f := picker.fit(step, b, "cpu")) is not None]
        for label in dict.fromkeys(singles + picked):
            yield f"{head}:s{step.stage}b{step.block}:{label}"


def plan_rows(model: str, width: float, batch: int, fraction: float) -> Iterator[str]:
    """The full model, then every step with the plan a CPU node gets at ``fraction`` of
    full training's predicted peak (the fastest that fits, else the cheapest CPU plan)."""
    from profl_strategy.memory.model import estimate_full
    from profl_strategy.memory.plans.memory import cheapest_plan
    from profl_strategy.memory.plans.picker import PlanPicker
    from profl_strategy.methods.profl.schedule import progressive_steps
    from profl_strategy.task.model_key import ModelKey

    key = ModelKey(model, 10, MODELS[model], width)
    picker = PlanPicker(key, batch, "exact", 4)
    budget = fraction * estimate_full(key, batch).total_mb
    head = f"{model}:{width:g}:{batch}"
    yield f"{head}:full:plain"
    for step in progressive_steps(key.spec().num_blocks):
        fit = picker.fit(step, budget, "cpu")
        label = fit[0] if fit else cheapest_plan(key, step, batch, picker.on_cpu)[0].label()
        yield f"{head}:s{step.stage}b{step.block}:{label}"


def reductions(path: Path) -> str:
    """Markdown: per model, width and batch, the worst measured step against full training."""
    done = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    groups: dict[str, dict[str, dict]] = {}
    for r in done:
        if "error" not in r:
            head, _, target = r["row"].rpartition(":")[0].rpartition(":")
            groups.setdefault(head, {})[target + ":" + r["row"].rsplit(":", 1)[1]] = r
    lines = ["| configuration | full training (measured MB) | worst step (measured MB) | "
             "reduction |", "|---|---|---|---|"]  # fmt: skip
    for head, got in groups.items():
        full = next((r for t, r in got.items() if t.startswith("full:")), None)
        steps = {t: r for t, r in got.items() if t.startswith("s")}
        if full is None or not steps:
            continue
        t, worst = max(steps.items(), key=lambda kv: kv[1]["measured_mb"])
        cut = 100 * (worst["measured_mb"] / full["measured_mb"] - 1)
        lines.append(f"| {head} | {full['measured_mb']:.1f} | {worst['measured_mb']:.1f} ({t}) "
                     f"| {cut:+.1f}% |")  # fmt: skip
    return "\n".join(lines)


def measure_row(row: str, threads: int) -> dict:
    """Run one row in this process (call it in a fresh one): measured and predicted MB."""
    import torch

    torch.set_num_threads(threads)
    from flwr.app import ArrayRecord

    from client_app.baselines import fit_depth, fit_width
    from client_app.step import fit_step
    from profl_strategy.engine.step import Step
    from profl_strategy.memory.model import estimate_full
    from profl_strategy.memory.peak import PeakMeter
    from profl_strategy.memory.plans.memory import estimate_plan
    from profl_strategy.memory.plans.plan import Plan
    from profl_strategy.memory.runtime import CPU_CALL_ALLOWANCE_MB, prepare_process, set_policy
    from profl_strategy.methods.baselines.depth import DepthSubModel, depth_need_mb, heads_for
    from profl_strategy.methods.baselines.width import sub_key
    from profl_strategy.methods.profl.step_model import StepModel
    from profl_strategy.models import build_full_model
    from profl_strategy.task.model_key import ModelKey

    model, width, batch, target, label = row.split(":")
    key, batch = ModelKey(model, 10, MODELS[model], float(width)), int(batch)
    hyper = {"epochs": 1, "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4,
             "proximal_mu": 0.0, "device": torch.device("cpu")}  # fmt: skip

    def loader() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for _ in range(2):  # fresh tensors per batch, as the data loader makes them
            yield torch.randn(batch, *key.input_shape), torch.randint(0, 10, (batch,))

    set_policy(True)  # as a strict node does before it estimates (client_app.node)
    torch.manual_seed(0)
    if target[0] == "s":
        step = Step(int(target[1]), int(target[3:]))
        plan = Plan.from_label(label)
        predicted = estimate_plan(key, step, batch, plan).total_mb
        make = lambda: StepModel.of(key, step)  # noqa: E731
        run = lambda arrays: fit_step(key, step, plan, arrays, loader(), hyper)  # noqa: E731
    elif target[0] == "d":
        depth = int(target[1:])
        heads = heads_for(depth, True)
        predicted = depth_need_mb(key, depth, heads, batch)
        make = lambda: DepthSubModel(key.spec(), depth, heads)  # noqa: E731
        run = lambda arrays: fit_depth(key, depth, heads, 1.0, arrays, loader(), hyper)  # noqa: E731
    else:
        sub = key if target == "full" else sub_key(key, float(target[1:]))
        predicted = estimate_full(sub, batch).total_mb
        make = lambda: build_full_model(sub.spec())  # noqa: E731
        run = lambda arrays: fit_width(sub, arrays, loader(), hyper)  # noqa: E731
    # The idle size after estimating, before the row's arrays exist: they (and the model
    # they are made from, freed before the call) belong to the call.
    idle = prepare_process(key)
    built = make()
    arrays = ArrayRecord({k: v.detach().clone() for k, v in built.state_dict().items()})
    del built
    with PeakMeter(torch.device("cpu")) as meter:
        run(arrays)
    assert meter.result is not None
    predicted += CPU_CALL_ALLOWANCE_MB
    return {"row": row, "predicted_mb": round(predicted, 2),
            "measured_mb": round(meter.result.peak_mb, 2), "idle_mb": round(idle, 1),
            "method": meter.result.method, "threads": meter.result.threads,
            "allocator": meter.result.allocator}  # fmt: skip


def run_fresh(row: str, threads: int) -> dict:
    """:func:`measure_row` in a fresh Python process."""
    env = os.environ | {"PROFL_TORCH_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory.cpu", "--row", row, "--threads", str(threads)],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    if out.returncode != 0:
        return {"row": row, "error": out.stderr.strip().splitlines()[-1:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def error_pct(r: dict) -> float:
    """How far the prediction lies above (+) or below (-) the measured peak."""
    return 100 * (r["predicted_mb"] / max(r["measured_mb"], 1e-6) - 1)


def within_bar(r: dict) -> bool:
    """The bar: predicted >= measured and at most 25% or 4 MB above it, whichever is larger."""
    over = r["predicted_mb"] - r["measured_mb"]
    return 0 <= over <= max(0.25 * r["measured_mb"], 4.0)


def table(path: Path) -> str:
    """Markdown: every row, then per model the worst errors and the count within the bar."""
    done = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    ok = [r for r in done if "error" not in r]
    lines = ["| row | threads | predicted MB | measured MB | error | bar |", "|---" * 6 + "|"]
    for r in ok:
        lines.append(f"| {r['row']} | {r['threads']} | {r['predicted_mb']:.2f} | "
                     f"{r['measured_mb']:.2f} | {error_pct(r):+.1f}% | "
                     f"{'ok' if within_bar(r) else 'MISS'} |")  # fmt: skip
    lines += ["", "| model | rows | within bar | under (pred < meas) | worst under | worst over |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for model in MODELS:
        mine = [r for r in ok if r["row"].startswith(model + ":")]
        if not mine:
            continue
        under = [r for r in mine if r["predicted_mb"] < r["measured_mb"]]
        lo, hi = min(mine, key=error_pct), max(mine, key=error_pct)
        worst = f"{error_pct(lo):+.1f}% ({lo['row']}) | {error_pct(hi):+.1f}% ({hi['row']})"
        lines.append(f"| {model} | {len(mine)} | {sum(map(within_bar, mine))} | {len(under)} | "
                     f"{worst} |")  # fmt: skip
    failed = [r for r in done if "error" in r]
    if failed:
        lines += ["", f"{len(failed)} rows failed: " + ", ".join(r["row"] for r in failed[:10])]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="cnn,resnet18,resnet34,vgg16,vit")
    ap.add_argument("--widths", default="0.25,1")
    ap.add_argument("--batches", default="16,64")
    ap.add_argument("--threads", type=int, default=1, help="torch threads in each row's process")
    ap.add_argument("--shard", default="0/1", help="i/n: rows i, i+n, i+2n, ...")
    ap.add_argument("--jobs", type=int, default=1, help="rows measured at once (one thread each)")
    ap.add_argument("--only", default="", help="keep rows matching this regular expression")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/cpu_memory/rows.jsonl"))
    ap.add_argument("--rows-from", type=Path,
                    help="measure the rows of an earlier rows file")  # fmt: skip
    ap.add_argument("--row", help=argparse.SUPPRESS)
    ap.add_argument("--plans-for", type=float, default=0.0,
                    help="instead of the grid: the full model and each step with the plan a "
                    "CPU node gets at this fraction of full training's peak")  # fmt: skip
    ap.add_argument("--table", type=Path, help="print the table of a rows file and stop")
    args = ap.parse_args()
    if args.row:
        print(json.dumps(measure_row(args.row, args.threads)))
        return
    if args.table:
        print(table(args.table) + "\n\n" + reductions(args.table))
        return
    i, n = (int(v) for v in args.shard.split("/"))
    if args.rows_from:
        lines = args.rows_from.read_text().splitlines()
        todo = [json.loads(line)["row"] for line in lines if line.strip()][i::n]
    else:  # listing prices every plan the picker hands out: minutes for the large models
        listed = (lambda m, w, b: plan_rows(m, w, b, args.plans_for)) if args.plans_for else rows
        todo = [
            r
            for m in args.models.split(",")
            for w in args.widths.split(",")
            for b in args.batches.split(",")
            for r in listed(m, float(w), int(b))
        ][i::n]
    todo = [r for r in todo if re.search(args.only, r)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if args.out.exists():
        done = {json.loads(line)["row"] for line in args.out.read_text().splitlines() if line}
    todo = [r for r in todo if r not in done]
    print(f"{len(todo)} rows to measure ({len(done)} already in {args.out})", flush=True)
    with ThreadPoolExecutor(args.jobs) as pool, args.out.open("a") as out:
        for k, result in enumerate(pool.map(lambda r: run_fresh(r, args.threads), todo)):
            out.write(json.dumps(result) + "\n")
            out.flush()
            shown = result.get("error") or (
                f"{result['predicted_mb']:.2f} predicted, {result['measured_mb']:.2f} measured"
            )
            print(f"[{k + 1}/{len(todo)}] {result['row']}: {shown}", flush=True)
    print(table(args.out) + "\n\n" + reductions(args.out))


if __name__ == "__main__":
    main()
