"""Peak training memory with training plans: full model, ProFL, and ProFL with plans.

For each model and batch size it prints the full-model peak, ProFL's worst
step without plans, and ProFL's worst step when every step uses the fastest
plan that fits a budget of ``--budget`` times the full model's estimated peak
(or, where none fits, the plan with the lowest estimate). Every number is
estimated with the memory model; on CUDA it is also measured with
``torch.cuda.max_memory_allocated()``:

- full model and steps without plans: :func:`benchmarks.memory.steps.measure_cuda`
  (``train_step`` semantics, after a warm-up step);
- steps with a plan: :func:`profl_strategy.memory.plans.train.train_with_plan` over two
  host batches, the peak counted from the second batch on (steady state:
  momentum buffers exist);
- "runner" is the same runner with the no-change plan, which frees gradients
  right after each update instead of before the next backward.

Step times are the mean time of one more batch (after one) through
``train_with_plan``, relative to the no-change plan on the same step. On CUDA
it also checks that every exact plan trains the same weights as
``train_step`` (``--check``).

    python -m benchmarks.memory.plans --models resnet18 --batches 32 --width 0.25
    python -m benchmarks.memory.plans --bn-accuracy --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from benchmarks.memory.plan_checks import bn_accuracy, check_cuda_exactness
from benchmarks.memory.steps import Batches, host_batches, measure_cuda, new_step_model
from profl_strategy.engine.step import Step
from profl_strategy.memory.model import MB, estimate_full, estimate_step
from profl_strategy.memory.plans.memory import cheapest_plan, choose_plan, estimate_plan
from profl_strategy.memory.plans.plan import Plan, candidate_plans
from profl_strategy.memory.plans.train import train_with_plan
from profl_strategy.methods.profl.schedule import progressive_steps
from profl_strategy.methods.profl.step_model import StepModel
from profl_strategy.models import build_full_model
from profl_strategy.task.model_key import ModelKey


class ResetPeakAfterFirst:
    """Yields the batches and resets CUDA peak statistics before the second one."""

    def __init__(self, batches: Batches) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i, b in enumerate(self.batches):
            if i == 1:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            yield b


def run_plan(model: StepModel, loader: object, plan: Plan, device: torch.device) -> None:
    """One epoch of ``train_with_plan`` with the settings of ``measure_cuda``."""
    train_with_plan(
        model,
        loader,  # type: ignore[arg-type]
        plan,
        epochs=1,
        lr=0.01,
        momentum=0.9,
        weight_decay=0.0,
        proximal_mu=0.0,
        device=device,
    )


def steady_peak_mb(train: Callable[[ResetPeakAfterFirst], object], batches: Batches) -> float:
    """Peak MB allocated on CUDA by ``train`` over ``batches``, after the first batch.

    The cache is emptied first: blocks an earlier measurement left cached would
    otherwise be reused with other rounding and move the figure by a few MB.
    """
    torch.cuda.empty_cache()
    train(ResetPeakAfterFirst(batches))
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / MB
    torch.cuda.empty_cache()
    return peak


def measure_plan_cuda(key: ModelKey, step: Step, batch: int, plan: Plan) -> float:
    """Peak MB allocated in steady state by training ``step`` with ``plan`` on CUDA."""
    model = new_step_model(key, step)
    return steady_peak_mb(
        lambda b: run_plan(model, b, plan, torch.device("cuda")), host_batches(key, batch, 2)
    )


def step_time(
    key: ModelKey, step: Step, batch: int, plan: Plan, device: torch.device, reps: int
) -> float:
    """Seconds per batch: ``(T(1 + reps) - T(1)) / reps``, so one-off costs cancel.

    Each of ``T(1)`` and ``T(1 + reps)`` is the best of two runs, to damp noise
    from other work on the machine; NaN if the difference is not positive.
    """
    batches = host_batches(key, batch, 1 + reps)
    best = {}
    for n in (1, 1 + reps, 1, 1 + reps):
        model = new_step_model(key, step)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        run_plan(model, batches[:n], plan, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best[n] = min(best.get(n, float("inf")), time.perf_counter() - start)
    diff = (best[1 + reps] - best[1]) / reps
    return diff if diff > 0 else float("nan")


@dataclass
class StepRow:
    """One step's plans and their numbers (MB; step time relative to no plan)."""

    step: Step
    plan: Plan
    fits: bool
    est_plain: float
    est_plan: float
    cuda_plain: float | None = None
    cuda_runner: float | None = None
    cuda_plan: float | None = None
    time_ratio: float | None = None
    cuda_floor: float | None = None  # CUDA peak of the plan with the lowest estimate
    plan_c: Plan | None = None  # chosen for the CUDA-calibrated budget
    fits_c: bool = True
    cuda_plan_c: float | None = None
    time_ratio_c: float | None = None


def mb(value: float | None) -> str:
    """A number of MB, or "-"."""
    return "-" if value is None else f"{value:.1f}"


def cell(value: float | None, full: float | None) -> str:
    """MB and its reduction against the full model, e.g. ``"12.9 (+71.0%)"``."""
    if value is None or not full:
        return mb(value)
    return f"{value:.1f} ({1 - value / full:+.1%})"


def pick(
    key: ModelKey, step: Step, batch: int, budget: float, candidates: list[Plan]
) -> tuple[Plan, bool]:
    """The fastest plan within ``budget``, else the one with the lowest estimate."""
    plan = choose_plan(key, step, batch, budget, candidates)
    if plan is None:
        return cheapest_plan(key, step, batch, candidates)[0], False
    return plan, True


def bench_one(
    key: ModelKey,
    batch: int,
    budget_frac: float,
    candidates: list[Plan],
    reps: int,
    floor: bool = False,
) -> tuple[float, float | None, float | None, list[StepRow]]:
    """Full-model peaks, the calibrated CUDA budget and one row per ProFL step.

    On CUDA a second plan per step is chosen for the budget ``budget_frac``
    times the *measured* full-model peak, less the device's overhead over the
    memory model (cuBLAS/cuDNN workspaces, backward temporaries), calibrated as
    measured minus estimated peak of full-model training.
    """
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    spec = key.spec()
    full_est = estimate_full(key, batch).total_mb
    full_cuda = measure_cuda(build_full_model(spec), key, batch) if cuda else None
    budget = budget_frac * full_est
    budget_c = budget_frac * full_cuda - (full_cuda - full_est) if full_cuda else None
    rows = []
    for step in progressive_steps(spec.num_blocks):
        plan, fits = pick(key, step, batch, budget, candidates)
        row = StepRow(
            step,
            plan,
            fits,
            estimate_step(key, step, batch).total_mb,
            estimate_plan(key, step, batch, plan).total_mb,
        )
        base = step_time(key, step, batch, Plan(), device, reps) if reps > 0 else None
        if base:
            row.time_ratio = step_time(key, step, batch, plan, device, reps) / base
        if cuda and budget_c is not None:
            row.cuda_plain = measure_cuda(new_step_model(key, step), key, batch)
            row.cuda_runner = measure_plan_cuda(key, step, batch, Plan())
            row.cuda_plan = measure_plan_cuda(key, step, batch, plan)
            if floor:
                low = cheapest_plan(key, step, batch, candidates)[0]
                row.cuda_floor = measure_plan_cuda(key, step, batch, low)
            row.plan_c, row.fits_c = pick(key, step, batch, budget_c, candidates)
            same = row.plan_c == plan
            row.cuda_plan_c = (
                row.cuda_plan if same else measure_plan_cuda(key, step, batch, row.plan_c)
            )
            if base:
                t = (
                    row.time_ratio
                    if same
                    else step_time(key, step, batch, row.plan_c, device, reps)
                )
                row.time_ratio_c = t if same else t / base
        rows.append(row)
    return full_est, full_cuda, budget_c, rows


def technique_costs(key: ModelKey, batch: int, step: Step, reps: int) -> list[str]:
    """Markdown rows: estimate, CUDA peak and step time of each technique alone on ``step``."""
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    plans = [
        Plan(),
        Plan(fused_step=True),
        Plan(optimizer="sgd-momentum-host"),
        Plan(offload_prefix=True),
        Plan(batch // 2),
        Plan(batch // 4),
        Plan(batch // 8),
        Plan(checkpoint=True),
    ]
    base = step_time(key, step, batch, Plan(), device, reps) if reps else None
    out = []
    for plan in plans:
        if not plan.applies_to(step):
            continue
        est = estimate_plan(key, step, batch, plan).total_mb
        meas = measure_plan_cuda(key, step, batch, plan) if cuda else None
        ratio = step_time(key, step, batch, plan, device, reps) / base if base else None
        r = "-" if ratio is None else f"{ratio:.2f}"
        out.append(
            f"| {key.name} | {batch} | {step} | {plan.label()} | {est:.1f} | {mb(meas)} | {r} |"
        )
    return out


def main() -> None:
    """Print the summary, per-step and technique tables."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", default="resnet18,resnet34,vgg16")
    ap.add_argument("--batches", default="32,64,128")
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--out-depth", type=int, default=1)
    ap.add_argument("--budget", type=float, default=0.3, help="fraction of full-model peak")
    ap.add_argument("--reps", type=int, default=3, help="timed batches per plan (0: no timing)")
    ap.add_argument("--inexact", action="store_true", help="also offer optimizer='sgd'")
    ap.add_argument("--check", action="store_true", help="CUDA: plans vs train_step weights")
    ap.add_argument("--techniques", action="store_true", help="each technique on the worst step")
    ap.add_argument("--techniques-batch", type=int, default=64)
    ap.add_argument("--floor", action="store_true", help="CUDA: measure lowest-estimate plans")
    ap.add_argument("--bn-accuracy", action="store_true", help="micro-batch BatchNorm accuracy")
    ap.add_argument("--data-dir", default="../shared/data")
    args = ap.parse_args()
    if args.bn_accuracy:
        print("| batch | micro-batch | test accuracy | test loss |\n|---|---|---|---|")
        for line in bn_accuracy(args.data_dir, args.width, 64, [0, 16, 8, 4], 2, 4096):
            print(line, flush=True)
        return
    cuda = torch.cuda.is_available()
    print(f"device: {torch.cuda.get_device_name() if cuda else 'cpu (estimates only)'}")
    if cuda and args.check:
        print("\n| model | step | plan | max abs weight diff vs train_step (CUDA) |")
        print("|---|---|---|---|")
        for line in check_cuda_exactness(0.25):
            print(line, flush=True)
    keys = [
        ModelKey(n, 10, (3, 32, 32), args.width, args.out_depth) for n in args.models.split(",")
    ]
    batches = [int(b) for b in args.batches.split(",")]
    summary, detail, techniques = [], [], []
    for key in keys:
        for batch in batches:
            candidates = candidate_plans(batch, allow_inexact=args.inexact)
            full_est, full_cuda, budget_c, rows = bench_one(
                key, batch, args.budget, candidates, args.reps, args.floor
            )
            worst_plain = max(rows, key=lambda r: r.est_plain)
            worst_plan = max(rows, key=lambda r: r.est_plan)
            cuda_plain = max(r.cuda_plain for r in rows) if cuda else None
            cuda_plan = max(r.cuda_plan for r in rows) if cuda else None
            cuda_plan_c = max(r.cuda_plan_c for r in rows) if cuda else None
            cuda_floor = max(r.cuda_floor for r in rows) if cuda and args.floor else None
            slow = max(
                rows,
                key=lambda r: (
                    r.time_ratio if r.time_ratio == r.time_ratio and r.time_ratio else 0.0
                ),
            )
            unfit = ",".join(str(r.step) for r in rows if not r.fits) or "none"
            unfit_c = ",".join(str(r.step) for r in rows if not r.fits_c) or "none"
            summary.append(
                f"| {key.name} | {batch} | {full_est:.1f} | {mb(full_cuda)} "
                f"| {cell(worst_plain.est_plain, full_est)} | {cell(cuda_plain, full_cuda)} "
                f"| {cell(worst_plan.est_plan, full_est)} | {cell(cuda_plan, full_cuda)} "
                f"| {slow.time_ratio or 0:.2f} ({slow.step} {slow.plan.label()}) | {unfit} "
                f"| {mb(budget_c)} | {cell(cuda_plan_c, full_cuda)} | {unfit_c if cuda else '-'} "
                f"| {cell(cuda_floor, full_cuda)} |"
            )
            for r in rows:
                t = "-" if r.time_ratio is None else f"{r.time_ratio:.2f}"
                tc = "-" if r.time_ratio_c is None else f"{r.time_ratio_c:.2f}"
                fits = "yes" if r.fits else "no"
                plan_c = (
                    "-" if r.plan_c is None else r.plan_c.label() + ("" if r.fits_c else " (!)")
                )
                detail.append(
                    f"| {key.name} | {batch} | {r.step} | {r.plan.label()} | {fits} "
                    f"| {r.est_plain:.1f} | {r.est_plan:.1f} | {mb(r.cuda_plain)} "
                    f"| {mb(r.cuda_runner)} | {mb(r.cuda_plan)} | {t} "
                    f"| {plan_c} | {mb(r.cuda_plan_c)} | {tc} |"
                )
            if args.techniques and batch == args.techniques_batch:
                techniques += technique_costs(key, batch, worst_plain.step, args.reps)
            print("progress:", summary[-1], *detail[-len(rows) :], sep="\n", file=sys.stderr)
    print(
        f"\nBudget: {args.budget:.0%} of the full model's estimated peak; width {args.width}. "
        f"Calibrated (CUDA): {args.budget:.0%} of the measured full peak, less the measured "
        "minus estimated full peak."
    )
    print(
        "\n| model | batch | full est. MB | full CUDA MB | ProFL worst est. "
        "| ProFL worst CUDA | with plans worst est. | with plans worst CUDA "
        "| slowest plan (time x) | steps over budget | calibrated budget (est. MB) "
        "| calibrated plans worst CUDA | steps over calibrated budget "
        "| lowest-estimate plans worst CUDA |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(summary))
    print(
        "\n| model | batch | step | plan | fits | est. plain | est. plan | CUDA plain "
        "| CUDA runner plain | CUDA plan | time x | calibrated plan | its CUDA | its time x |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(detail))
    if techniques:
        print("\n| model | batch | step | technique | est. MB | CUDA MB | time x |")
        print("|---|---|---|---|---|---|---|")
        print("\n".join(techniques))


if __name__ == "__main__":
    main()
