"""Local training of one ProFL step."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

LossFn = Callable[[object, torch.Tensor], torch.Tensor]


def train_step(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    epochs: int,
    lr: float,
    momentum: float,
    weight_decay: float,
    proximal_mu: float,
    device: torch.device,
    loss_fn: LossFn = F.cross_entropy,  # type: ignore[assignment]
) -> tuple[float, int]:
    """Train the parameters that require grad; return mean loss and examples seen.

    ``loss_fn(model_output, labels)`` defaults to cross-entropy; models with
    several outputs (DepthFL's heads) pass their own.

    With ``proximal_mu > 0`` the FedProx term ``mu/2 * ||w - w_global||^2`` keeps
    the active block near the global one on non-IID data.
    """
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    anchor = [p.detach().clone() for p in params] if proximal_mu > 0 else []
    # foreach: one call per update for all tensors; on the CPU torch defaults to a Python
    # loop over them. Same arithmetic, same numbers. Weight decay is added to the gradients
    # in place (the same sum SGD makes), because foreach SGD would copy every gradient.
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum, foreach=True)
    total, seen = 0.0, 0
    for _ in range(epochs):
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            opt.zero_grad(set_to_none=True)  # last step's gradients are not held through this one
            loss = loss_fn(model(x), y)
            if anchor:
                prox = sum((p - a).pow(2).sum() for p, a in zip(params, anchor, strict=True))
                loss = loss + proximal_mu / 2 * prox
            loss.backward()
            if weight_decay:
                with torch.no_grad():
                    have = [p for p in params if p.grad is not None]
                    torch._foreach_add_([p.grad for p in have], have, alpha=weight_decay)  # type: ignore[arg-type, misc]
            opt.step()
            total += loss.item() * len(y)
            seen += len(y)
    opt.zero_grad(set_to_none=True)  # the reply is made without them
    return total / max(seen, 1), seen


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``loader``."""
    model.to(device).eval()
    loss, correct, n = 0.0, 0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits = model(x)
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
        n += len(y)
    return loss / max(n, 1), correct / max(n, 1)
