"""Checks of the training plans themselves, next to ``benchmarks.memory.plans``' memory tables.

- :func:`check_cuda_exactness` (``--check``, CUDA): every exact plan trains the same
  weights as ``train_step``;
- :func:`bn_accuracy` (``--bn-accuracy``): what micro-batches cost full-model
  BatchNorm training in test accuracy.
"""

from __future__ import annotations

import torch

from benchmarks.memory.steps import host_batches, new_step_model
from profl_strategy.engine.step import STAGE_FULL, Step
from profl_strategy.memory.plans.plan import Plan
from profl_strategy.memory.plans.train import train_with_plan
from profl_strategy.task.model_key import ModelKey
from profl_strategy.task.train import evaluate, train_step


def check_cuda_exactness(width: float) -> list[str]:
    """Max weight difference between ``train_step`` and each exact plan, trained on CUDA.

    cuDNN runs deterministically here, so a difference is the plan's, not the
    atomics' (the first row of each case repeats ``train_step`` itself).
    """
    dev = torch.device("cuda")
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    cases = [
        (ModelKey("resnet18", 10, (3, 32, 32), width, 1), Step(2, 3)),
        (ModelKey("vgg16", 10, (3, 32, 32), width, 1), Step(2, 4)),
        (ModelKey("resnet18", 10, (3, 32, 32), width, 1), Step(1, 1)),
    ]
    plans = [
        None,
        Plan(checkpoint=True),
        Plan(offload_prefix=True),
        Plan(fused_step=True),
        Plan(optimizer="sgd-momentum-host"),
        Plan(checkpoint=True, offload_prefix=True, fused_step=True, optimizer="sgd-momentum-host"),
    ]
    kw = {"epochs": 2, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "proximal_mu": 0.01}
    out = []
    try:
        for key, step in cases:
            batches = host_batches(key, 16, 3)
            ref = new_step_model(key, step)
            train_step(ref, batches, device=dev, **kw)  # type: ignore[arg-type]
            ref_state = ref.state_dict()
            for plan in (p for p in plans if p is None or p.applies_to(step)):
                model = new_step_model(key, step)
                if plan is None:
                    train_step(model, batches, device=dev, **kw)  # type: ignore[arg-type]
                else:
                    train_with_plan(model, batches, plan, device=dev, **kw)
                state = model.state_dict()
                diff = max(
                    float((state[k].to(dev).double() - v.double()).abs().max())
                    for k, v in ref_state.items()
                )
                label = "train_step again" if plan is None else plan.label()
                out.append(f"| {key.name} | {step} | {label} | {diff:.2e} |")
    finally:
        torch.backends.cudnn.deterministic = False
    return out


def bn_accuracy(
    data_dir: str, width: float, batch: int, micro: list[int], epochs: int, samples: int
) -> list[str]:
    """Test accuracy of full-model ResNet-18 training on Fashion-MNIST, per micro-batch.

    Every BatchNorm layer trains, so this is the largest effect micro-batches
    can have (a ProFL step trains one block's BatchNorms).
    """
    from profl_strategy.task.dataset import load_partition, load_test, make_loader

    kw = {"partitioner": "iid", "alpha": 0.5, "shards_per_partition": 2, "seed": 0}
    images, labels = load_partition("fmnist", 0, 1, data_dir=data_dir, **kw)
    test_x, test_y = load_test("fmnist", data_dir=data_dir, seed=0)
    images, labels = images[:samples], labels[:samples]
    test = make_loader(test_x[:2000], test_y[:2000], "fmnist", batch_size=256, train=False, seed=0)
    key = ModelKey("resnet18", 10, (1, 28, 28), width, 0)
    step = Step(STAGE_FULL, key.spec().num_blocks - 1)
    cpu = torch.device("cpu")
    out = []
    for m in micro:
        model = new_step_model(key, step)
        train = make_loader(images, labels, "fmnist", batch_size=batch, train=True, seed=0)
        train_with_plan(
            model,
            train,
            Plan(m),
            epochs=epochs,
            lr=0.05,
            momentum=0.9,
            weight_decay=5e-4,
            proximal_mu=0.0,
            device=cpu,
        )
        loss, acc = evaluate(model, test, cpu)
        out.append(f"| {batch} | {m or batch} | {acc:.4f} | {loss:.4f} |")
    return out
