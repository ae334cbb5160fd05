"""Centralized evaluation of the global model on the held-out test and validation splits."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from profl_strategy.task.dataset import load_test, load_validation, make_loader
from profl_strategy.task.train import evaluate

TEST_SUBSET_SEED = 0  # one subset for every run, method and seed: their curves compare

LoaderOf = Callable[[np.ndarray, np.ndarray], DataLoader]


def split_loaders(
    images: np.ndarray, labels: np.ndarray, loader_of: LoaderOf, round_size: int
) -> tuple[DataLoader, DataLoader]:
    """``(whole split, the rounds' split)``: the rounds score a fixed random subset of
    ``round_size`` rows when that is smaller than the split (0: the whole split)."""
    whole = loader_of(images, labels)
    if not 0 < round_size < len(labels):
        return whole, whole
    keep = np.sort(np.random.default_rng(TEST_SUBSET_SEED).permutation(len(labels))[:round_size])
    return whole, loader_of(images[keep], labels[keep])


class HeldOutEvaluator:
    """Loads the test split (and the validation split) once, then scores any model the
    strategy hands it.

    The validation split is the ``val_fraction`` of the train split the server holds out
    of every partition (:func:`~profl_strategy.task.dataset.load_validation`): settings
    are chosen on it, and the test split is only reported. With ``test_size`` > 0 the
    per-round scores use fixed random subsets of at most that many test and validation
    images (a long CPU comparison spends much of its time scoring otherwise); the final
    model (``server_round`` < 0) is always scored on both whole splits.
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
        val_fraction: float = 0.0,
        channels_last: bool = False,
    ) -> None:
        loader_of: LoaderOf = partial(
            make_loader,
            dataset=dataset,
            batch_size=batch_size,
            train=False,
            seed=seed,
            channels_last=channels_last,
        )
        images, labels = load_test(dataset, data_dir=data_dir, seed=seed)
        self.loader, self.round_loader = split_loaders(images, labels, loader_of, test_size)
        self.num_examples = len(labels)
        self.val_loaders: tuple[DataLoader, DataLoader] | None = None
        self.val_examples = 0
        if val_fraction > 0:
            images, labels = load_validation(
                dataset, data_dir=data_dir, seed=seed, val_fraction=val_fraction
            )
            self.val_loaders = split_loaders(images, labels, loader_of, test_size)
            self.val_examples = len(labels)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def __call__(self, server_round: int, model: nn.Module) -> dict[str, float]:
        """Loss and accuracy of ``model`` on the test split, and ``val_loss`` and
        ``val_accuracy`` on the validation split when there is one: on the rounds'
        subsets, or the whole splits when ``server_round`` < 0 (the final model)."""
        final = server_round < 0
        loss, acc = evaluate(model, self.loader if final else self.round_loader, self.device)
        scores = {"accuracy": acc, "loss": loss}
        if self.val_loaders is not None:
            loss, acc = evaluate(model, self.val_loaders[0 if final else 1], self.device)
            scores |= {"val_accuracy": acc, "val_loss": loss}
        model.cpu()
        return scores
