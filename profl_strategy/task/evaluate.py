"""Centralized evaluation of the global model on the held-out test split."""

from __future__ import annotations

from functools import partial

import numpy as np
import torch
from torch import nn

from profl_strategy.task.dataset import load_test, make_loader
from profl_strategy.task.train import evaluate

TEST_SUBSET_SEED = 0  # one subset for every run, method and seed: their curves compare


class TestSetEvaluator:
    """Loads the test split once, then scores any model the strategy hands it.

    With ``test_size`` > 0 the per-round scores use a fixed random subset of that many
    test images (a long CPU comparison spends much of its time scoring otherwise); the
    final model (``server_round`` < 0) is always scored on the whole split.
    ``channels_last`` lays the batches out as the clients' (``make_loader``).
    """

    def __init__(
        self,
        dataset: str,
        data_dir: str,
        seed: int,
        batch_size: int,
        test_size: int = 0,
        *,
        channels_last: bool = False,
    ) -> None:
        images, labels = load_test(dataset, data_dir=data_dir, seed=seed)
        loader_of = partial(
            make_loader,
            dataset=dataset,
            batch_size=batch_size,
            train=False,
            seed=seed,
            channels_last=channels_last,
        )
        self.loader = loader_of(images, labels)
        self.round_loader = self.loader
        if 0 < test_size < len(labels):
            rng = np.random.default_rng(TEST_SUBSET_SEED)
            keep = np.sort(rng.permutation(len(labels))[:test_size])
            self.round_loader = loader_of(images[keep], labels[keep])
        self.num_examples = len(labels)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def __call__(self, server_round: int, model: nn.Module) -> dict[str, float]:
        """Loss and accuracy of ``model``: on the round subset, or the whole split when
        ``server_round`` < 0 (the final model)."""
        loader = self.loader if server_round < 0 else self.round_loader
        loss, acc = evaluate(model, loader, self.device)
        model.cpu()
        return {"accuracy": acc, "loss": loss}
