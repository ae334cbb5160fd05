"""Effective movement: one scalar that says whether a block is still learning.

Over the last ``window`` rounds, the global parameters of the active block took
steps ``d_1 .. d_K``. If they keep pointing the same way, the net displacement
is as long as the path (EM near 1); if they oscillate around a point, the net
displacement is short compared with the path (EM near 0) and the block has
converged. The server computes it from the global model alone, so clients do
no extra work.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import torch

VARIANTS = ("vector", "scalar")


def effective_movement(snapshots: Sequence[torch.Tensor], variant: str = "vector") -> float:
    """EM over consecutive snapshots ``w_0 .. w_K`` of a block's parameters.

    ``vector``: ``||w_K - w_0|| / sum ||w_i - w_(i-1)||``.
    ``scalar``: the same on ``s_i = ||w_i||``, one number per round.
    Returns 0 when the block did not move at all.
    """
    if len(snapshots) < 2:
        raise ValueError("effective movement needs at least two snapshots")
    if variant == "scalar":
        s = torch.stack([w.double().norm() for w in snapshots])
        path = (s[1:] - s[:-1]).abs().sum()
        net = (s[-1] - s[0]).abs()
    elif variant == "vector":
        w = [v.double() for v in snapshots]
        path = sum((b - a).norm() for a, b in zip(w[:-1], w[1:], strict=False))
        net = (w[-1] - w[0]).norm()
    else:
        raise ValueError(f"effective-movement variant '{variant}' is not one of {VARIANTS}")
    return 0.0 if float(path) == 0.0 else float(net / path)


class ConvergenceDetector:
    """Says a block has converged when EM < ``threshold`` for ``patience`` rounds."""

    def __init__(
        self, window: int, threshold: float, patience: int, variant: str = "vector"
    ) -> None:
        if window < 2:
            raise ValueError(f"em-window must be >= 2, got {window}")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"em-threshold must be in (0, 1), got {threshold}")
        if patience < 1:
            raise ValueError(f"em-patience must be >= 1, got {patience}")
        if variant not in VARIANTS:
            raise ValueError(f"em-variant '{variant}' is not one of {VARIANTS}")
        self.window, self.threshold = window, threshold
        self.patience, self.variant = patience, variant
        self.snapshots: deque[torch.Tensor] = deque(maxlen=window + 1)
        self.below = 0

    def reset(self, start: torch.Tensor) -> None:
        """Start watching a new block from its current parameters."""
        self.snapshots.clear()
        self.snapshots.append(start.detach().flatten().clone())
        self.below = 0

    def update(self, params: torch.Tensor) -> float | None:
        """Record one round's parameters; EM once the window is full, else None."""
        self.snapshots.append(params.detach().flatten().clone())
        if len(self.snapshots) <= self.window:
            return None
        em = effective_movement(list(self.snapshots), self.variant)
        self.below = self.below + 1 if em < self.threshold else 0
        return em

    def state_dict(self) -> dict:
        """Window and counter, for checkpoints."""
        return {"snapshots": list(self.snapshots), "below": self.below}

    def load_state_dict(self, state: dict) -> None:
        """Continue watching from a checkpoint."""
        self.snapshots = deque(state["snapshots"], maxlen=self.window + 1)
        self.below = int(state["below"])

    @property
    def converged(self) -> bool:
        """True once EM stayed below the threshold long enough."""
        return self.below >= self.patience
