"""Peak training memory: full-model training against every ProFL step.

Prints, per model and batch size, the memory model's estimate and, on CUDA,
``torch.cuda.max_memory_allocated()`` over one SGD-momentum step after a
warm-up step (so lazily created buffers are counted once, as in training).

    python -m benchmarks.memory.steps --models resnet18 --batches 64
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

from profl_strategy.engine.step import Step
from profl_strategy.memory.model import MB, estimate_full, estimate_step
from profl_strategy.methods.profl.schedule import progressive_steps
from profl_strategy.methods.profl.step_model import StepModel, block_shapes
from profl_strategy.models import build_full_model
from profl_strategy.task.model_key import ModelKey

Batches = list[tuple[torch.Tensor, torch.Tensor]]


def host_batches(key: ModelKey, batch: int, n: int) -> Batches:
    """``n`` random batches in host memory, as a data loader yields them."""
    g = torch.Generator().manual_seed(0)
    return [
        (
            torch.randn(batch, *key.input_shape, generator=g),
            torch.randint(0, key.num_classes, (batch,), generator=g),
        )
        for _ in range(n)
    ]


def new_step_model(key: ModelKey, step: Step) -> StepModel:
    """Seeded step model (shapes cached first: their first computation draws weights)."""
    block_shapes(key.spec())
    torch.manual_seed(0)
    return StepModel.of(key, step)


def measure_cuda(model: nn.Module, key: ModelKey, batch: int) -> float:
    """Peak MB allocated by one training step of ``model`` on CUDA."""
    dev = torch.device("cuda")
    model = model.to(dev).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    x = torch.randn(batch, *key.input_shape, device=dev)
    y = torch.randint(0, key.num_classes, (batch,), device=dev)
    for i in range(2):
        if i == 1:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / MB
    del model, opt, x, y
    torch.cuda.empty_cache()
    return peak


def main() -> None:
    """Print one row per (model, batch, step)."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", default="resnet18,resnet34,vgg16")
    ap.add_argument("--batches", default="32,64,128")
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--out-depth", type=int, default=1)
    args = ap.parse_args()
    cuda = torch.cuda.is_available()
    print(f"device: {torch.cuda.get_device_name() if cuda else 'cpu (estimates only)'}")
    print(
        "| model | batch | step | estimated MB | CUDA MB "
        "| reduction vs full (est.) | reduction vs full (CUDA) |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        key = ModelKey(name, 10, (3, 32, 32), args.width, args.out_depth)
        spec = key.spec()
        for batch in (int(b) for b in args.batches.split(",")):
            full_est = estimate_full(key, batch).total_mb
            full_cuda = measure_cuda(build_full_model(spec), key, batch) if cuda else None
            rows = [("full", full_est, full_cuda)]
            for step in progressive_steps(spec.num_blocks):
                est = estimate_step(key, step, batch).total_mb
                meas = (
                    measure_cuda(StepModel(spec, step, key.out_depth), key, batch) if cuda else None
                )
                rows.append((str(step), est, meas))
            worst_est = max(r[1] for r in rows[1:])
            worst_cuda = max(r[2] for r in rows[1:]) if cuda else None
            rows.append(("worst step", worst_est, worst_cuda))
            for label, est, meas in rows:
                m = f"{meas:.1f}" if meas is not None else "-"
                red_e = f"{1 - est / full_est:+.1%}" if label != "full" else ""
                red_c = (
                    f"{1 - meas / full_cuda:+.1%}" if meas is not None and label != "full" else ""
                )
                print(f"| {name} | {batch} | {label} | {est:.1f} | {m} | {red_e} | {red_c} |")


if __name__ == "__main__":
    main()
