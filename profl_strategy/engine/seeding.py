"""Seeded draws from torch's global generators that leave the caller's streams alone."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

CPU = torch.device("cpu")


@contextmanager
def seeded(seed: int, device: torch.device = CPU) -> Iterator[None]:
    """Seed torch's generators of the CPU and ``device`` with ``seed`` for the block; give
    the caller back the streams it had.

    Module init (``nn.init``), the augmentations' crops and flips and dropout draw from
    torch's global generators, so the same seed gives the same numbers only if those are
    seeded. Seeding them inside a fork (:func:`torch.random.fork_rng`) keeps the caller's
    streams, in simulation the server's and the other nodes' of the process, as they were.
    A CUDA ``device``'s generator is forked only when asked for: forking one initialises it.
    """
    cuda = device.type == "cuda"
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if cuda else []):
        torch.default_generator.manual_seed(seed)
        if cuda:
            torch.cuda.manual_seed(seed)
        yield
