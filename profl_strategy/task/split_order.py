"""The train split's seeded row order, and the validation rows cut from its front.

Plain numpy, no data stack: the server and every node (each its own process) derive the
same order and the same validation rows from ``(n, seed, val_fraction)`` alone.
"""

from __future__ import annotations

import numpy as np

# At most this share of the train split is held out (the run-config key's bound).
MAX_VAL_FRACTION = 0.5


def seeded_order(n: int, seed: int) -> np.ndarray:
    """The order local train rows reach the partitioner: shuffled by seed first, as
    ``FederatedDataset`` shuffles the hub's, so IID partitions are random too."""
    return np.random.default_rng(seed).permutation(n)


def validation_count(n: int, val_fraction: float) -> int:
    """How many of the train split's ``n`` rows the server holds out for validation.

    At least one once ``val_fraction`` > 0, so a tiny split still has something to score;
    0 holds out none. A value outside ``[0, MAX_VAL_FRACTION)`` is refused here too, for
    callers that skip the run-config check.
    """
    if not 0 <= val_fraction < MAX_VAL_FRACTION:
        raise ValueError(
            f"'val-fraction' (data.val_fraction) = {val_fraction!r} is invalid: it must be "
            f"a number in [0, {MAX_VAL_FRACTION:g}) (0: no validation split)"
        )
    return max(1, round(val_fraction * n)) if val_fraction > 0 else 0


def split_order(n: int, seed: int, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """The train split's rows in :func:`seeded_order`, cut in two: ``(validation rows,
    the rows the partitioner gets, in the order it gets them)``.

    The validation rows are the first :func:`validation_count` of the seeded order: a
    uniform draw that depends on ``(n, seed, val_fraction)`` only, so the server and
    every node (each its own process) cut the same rows without talking to each other.
    With ``val_fraction=0`` the partitioner sees exactly :func:`seeded_order`, so the
    partitions are those of a run without a validation split.
    """
    order = seeded_order(n, seed)
    held = validation_count(n, val_fraction)
    return order[:held], order[held:]
