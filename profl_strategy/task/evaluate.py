"""Centralized evaluation of the global model on the held-out test split."""

from __future__ import annotations

import torch
from torch import nn

from profl_strategy.task.dataset import load_test, make_loader
from profl_strategy.task.train import evaluate


class TestSetEvaluator:
    """Loads the test split once, then scores any model the strategy hands it."""

    def __init__(self, dataset: str, data_dir: str, seed: int, batch_size: int) -> None:
        images, labels = load_test(dataset, data_dir=data_dir, seed=seed)
        self.loader = make_loader(
            images, labels, dataset, batch_size=batch_size, train=False, seed=seed
        )
        self.num_examples = len(labels)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def __call__(self, server_round: int, model: nn.Module) -> dict[str, float]:
        """Loss and accuracy of ``model`` on the whole test split."""
        loss, acc = evaluate(model, self.loader, self.device)
        model.cpu()
        return {"accuracy": acc, "loss": loss}
