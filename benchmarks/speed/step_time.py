"""Milliseconds per local training step of a preset's model, on one CPU thread.

On 2 cores the CIFAR comparisons are bound by training compute: this says what one
step costs by itself (forward, backward and an SGD step on one random batch of the
preset's size, no data loading), at the width ratios the width-scaled baselines train
(HeteroFL, FedRolex, AllSmall), and what a memory layout or a lower precision would
change. bfloat16 changes every number a run reports, so it is a measurement here, not
a setting of the app; ``--compile`` adds a ``torch.compile`` setup per ratio.

The setups take their steps in turn (one step of each, then the next round), so a
machine whose speed drifts slows them all alike; each row is the median step.

Example (run alone on the machine; timings of a shared machine mean nothing)::

    python -m benchmarks.speed.step_time --preset cifar10_plateau_550 --ratios 1,0.5,0.25
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch.utils.flop_counter import FlopCounterMode

from profl_strategy.methods.baselines.width import width_model
from profl_strategy.run.config import compose_config
from profl_strategy.run.factory import model_key
from profl_strategy.task.model_key import ModelKey


class Mode(NamedTuple):
    """How a setup trains: memory layout, precision, and whether Inductor compiles it."""

    channels_last: bool
    bf16: bool = False
    compiled: bool = False


MODES = {
    "float32": Mode(False),
    "float32, channels-last": Mode(True),
    "bfloat16 autocast, channels-last": Mode(True, bf16=True),
}
# Opt-in (--compile): Inductor needs a C++ compiler and tens of seconds per setup, and the
# app builds a fresh model every round, so this measures a ceiling, not a setting.
COMPILED = {"torch.compile, channels-last": Mode(True, compiled=True)}


@dataclass
class Setup:
    """One (width ratio, mode): a model, its batch and optimizer, and its step times."""

    ratio: float
    mode: str
    step: Callable[[], None]
    gflop: float
    seconds: list[float] = field(default_factory=list)

    def median_ms(self) -> float:
        return 1000 * statistics.median(self.seconds)


def make_setup(key: ModelKey, t: DictConfig, ratio: float, mode: str) -> Setup:
    """Build ``key``'s model at ``ratio`` times its width, trained as a client would."""
    channels_last, bf16, compiled = {**MODES, **COMPILED}[mode]
    torch.manual_seed(0)
    model = width_model(key, ratio).train()
    x = torch.randn(int(t.batch_size), *key.input_shape)
    y = torch.randint(0, key.num_classes, (len(x),))
    with FlopCounterMode(display=False) as flops:
        F.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(
        model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay
    )
    if compiled:
        model = torch.compile(model)

    def step() -> None:
        amp = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with amp:
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return Setup(ratio, mode, step, flops.get_total_flops() / 1e9)


def measure(setups: list[Setup], *, steps: int, warmup: int) -> None:
    """Step every setup in turn, ``warmup + steps`` times; keep the last ``steps`` times."""
    for i in range(warmup + steps):
        for s in setups:
            start = time.perf_counter()
            s.step()
            if i >= warmup:
                s.seconds.append(time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="cifar10_plateau_550")
    p.add_argument("--ratios", default="1", help="comma-separated width ratios of the model")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--compile", action="store_true", help="add a torch.compile setup per ratio")
    args = p.parse_args()
    torch.set_num_threads(1)
    ratios = [float(r) for r in args.ratios.split(",") if r.strip()]
    modes = [*MODES, *(COMPILED if args.compile else ())]
    cfg = compose_config({"preset": args.preset})
    key = model_key(cfg)
    setups = [make_setup(key, cfg.train, r, m) for r in ratios for m in modes]
    measure(setups, steps=args.steps, warmup=args.warmup)
    base = setups[0].median_ms()
    print(f"preset {args.preset}, one thread, median of {args.steps} steps, setups interleaved\n")
    print("| width ratio | mode | GFLOP per step | ms per step | relative | GFLOP/s |")
    print("|---|---|---|---|---|---|")
    for s in setups:
        ms = s.median_ms()
        print(
            f"| {s.ratio:g} | {s.mode} | {s.gflop:.3f} | {ms:.1f} | {ms / base:.2f} "
            f"| {s.gflop / ms * 1000:.1f} |"
        )


if __name__ == "__main__":
    main()
