"""Effective movement: one scalar that says whether a block is still learning.

Over the last ``window`` rounds, the global parameters of the active block took
steps ``d_1 .. d_K``. If they keep pointing the same way, the net displacement
is as long as the path (EM near 1); if they oscillate around a point, the net
displacement is short compared with the path (EM near 0) and the block has
converged. The server computes it from the global model alone, so clients do
no extra work.

With a few non-IID nodes per round, the round-to-round step of a block is
dominated by *which* nodes were drawn, so a block that still learns can look
like a random walk. The ``denoised`` variant removes that part: each round the
server also has the nodes' individual updates, whose spread estimates the
client-sampling variance of the aggregate step (:func:`sampling_noise`), and
EM becomes the share of the net displacement that this noise does not explain.

The first author's example code measures the ``vector`` form with L1 norms, over
a window of 6 round-to-round changes, on a fixed random sample of at most 10,000
of the block's parameters: ``norm="l1"``, ``window=6``, ``sample=10000`` here.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import torch

VARIANTS = ("vector", "scalar", "denoised")
NORMS = {"l2": 2, "l1": 1}
# The forms compared on recorded runs (``em.record``, benchmarks/accuracy/em_stops.py): each
# is ConvergenceDetector's (window, variant, norm, sample); "l1" is the authors'.
CANDIDATES: dict[str, tuple[int, str, str, int]] = {
    "vector": (4, "vector", "l2", 0),
    "vector-w8": (8, "vector", "l2", 0),
    "l1": (6, "vector", "l1", 10000),
    "denoised": (4, "denoised", "l2", 0),
    "denoised-w8": (8, "denoised", "l2", 0),
}


def sampling_noise(updates: Sequence[torch.Tensor], weights: Sequence[float]) -> float:
    """Estimated variance (squared norm) of the weighted mean of ``updates``.

    The nodes of a round are a sample; their weighted mean (FedAvg) differs
    from the population's by about ``n/(n-1) * sum p_k^2 ||u_k - mean||^2``,
    ``p_k = weights_k / sum weights``. With one update there is no spread to
    see: 0 (no noise assumed, so the block is not frozen on noise it cannot
    measure). Passing the nodes' new weights instead of their updates gives
    the same value: the previous global parameters cancel.
    """
    if len(updates) != len(weights):
        raise ValueError(f"{len(updates)} updates but {len(weights)} weights")
    n = len(updates)
    total = float(sum(weights))
    if n < 2 or total <= 0:
        return 0.0
    u = torch.stack([v.detach().double().flatten() for v in updates])
    p = torch.tensor([float(w) / total for w in weights], dtype=torch.float64)
    mean = (p[:, None] * u).sum(0)
    spread = (p**2 * ((u - mean) ** 2).sum(1)).sum()
    return float(spread) * n / (n - 1)


def effective_movement(
    snapshots: Sequence[torch.Tensor],
    variant: str = "vector",
    noise: Sequence[float] = (),
    norm: str = "l2",
) -> float:
    """EM over consecutive snapshots ``w_0 .. w_K`` of a block's parameters.

    ``vector``: ``||w_K - w_0|| / sum ||w_i - w_(i-1)||``, in the ``norm`` given.
    ``scalar``: the same on ``s_i = ||w_i||``, one number per round.
    ``denoised``: ``sqrt(max(0, 1 - sum noise_i / ||w_K - w_0||^2))`` with
    ``noise_i`` the sampling variance of round ``i``'s step: 0 when the net
    displacement is what client sampling alone would give, near 1 when the
    block drifts far beyond it.
    Returns 0 when the block did not move at all.
    """
    if len(snapshots) < 2:
        raise ValueError("effective movement needs at least two snapshots")
    if variant == "denoised":
        net_sq = float((snapshots[-1].double() - snapshots[0].double()).pow(2).sum())
        if net_sq == 0.0:
            return 0.0
        return max(0.0, 1.0 - float(sum(noise)) / net_sq) ** 0.5
    if variant == "scalar":
        s = torch.stack([w.double().norm() for w in snapshots])
        path = (s[1:] - s[:-1]).abs().sum()
        net = (s[-1] - s[0]).abs()
    elif variant == "vector":
        if norm not in NORMS:
            raise ValueError(f"effective-movement norm '{norm}' is not one of {tuple(NORMS)}")
        p = NORMS[norm]
        w = [v.double() for v in snapshots]
        path = sum((b - a).norm(p) for a, b in zip(w[:-1], w[1:], strict=False))
        net = (w[-1] - w[0]).norm(p)
    else:
        raise ValueError(f"effective-movement variant '{variant}' is not one of {VARIANTS}")
    return 0.0 if float(path) == 0.0 else float(net / path)


class ConvergenceDetector:
    """Says a block has converged when EM < ``threshold`` for ``patience`` rounds."""

    def __init__(
        self,
        window: int,
        threshold: float,
        patience: int,
        variant: str = "vector",
        norm: str = "l2",
        sample: int = 0,
    ) -> None:
        """``sample > 0`` watches a fixed random subset of that many parameters
        (drawn when a block starts, seeded by its size), ``0`` all of them."""
        if window < 2:
            raise ValueError(f"em-window must be >= 2, got {window}")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"em-threshold must be in (0, 1), got {threshold}")
        if patience < 1:
            raise ValueError(f"em-patience must be >= 1, got {patience}")
        if variant not in VARIANTS:
            raise ValueError(f"em-variant '{variant}' is not one of {VARIANTS}")
        if norm not in NORMS:
            raise ValueError(f"em-norm '{norm}' is not one of {tuple(NORMS)}")
        if sample < 0:
            raise ValueError(f"em-sample must be >= 0 (0: every parameter), got {sample}")
        if variant == "denoised" and sample:
            raise ValueError("em-sample applies to the vector and scalar variants only")
        self.norm, self.sample = norm, sample
        self.index: torch.Tensor | None = None
        self.window, self.threshold = window, threshold
        self.patience, self.variant = patience, variant
        self.snapshots: deque[torch.Tensor] = deque(maxlen=window + 1)
        self.noise: deque[float] = deque(maxlen=window)
        self.below = 0

    def _watched(self, params: torch.Tensor) -> torch.Tensor:
        flat = params.detach().flatten()
        return (flat if self.index is None else flat[self.index]).clone()

    def reset(self, start: torch.Tensor) -> None:
        """Start watching a new block from its current parameters."""
        n = start.numel()
        self.index = None
        if 0 < self.sample < n:
            gen = torch.Generator().manual_seed(n)
            self.index = torch.randperm(n, generator=gen)[: self.sample].sort().values
        self.snapshots.clear()
        self.snapshots.append(self._watched(start))
        self.noise.clear()
        self.below = 0

    def update(self, params: torch.Tensor, noise: float = 0.0) -> float | None:
        """Record one round's parameters (and its sampling noise); EM once the window is full."""
        self.snapshots.append(self._watched(params))
        self.noise.append(float(noise))
        if len(self.snapshots) <= self.window:
            return None
        em = effective_movement(list(self.snapshots), self.variant, list(self.noise), self.norm)
        self.below = self.below + 1 if em < self.threshold else 0
        return em

    def state_dict(self) -> dict:
        """Window and counter, for checkpoints."""
        return {
            "snapshots": list(self.snapshots),
            "noise": list(self.noise),
            "below": self.below,
            "index": self.index,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue watching from a checkpoint."""
        self.snapshots = deque(state["snapshots"], maxlen=self.window + 1)
        self.noise = deque(state.get("noise", ()), maxlen=self.window)
        self.below = int(state["below"])
        self.index = state.get("index")

    @property
    def converged(self) -> bool:
        """True once EM stayed below the threshold long enough."""
        return self.below >= self.patience


class CandidateRecorder:
    """Every :data:`CANDIDATES` form of EM on the same rounds, for the round log.

    Decides nothing: it lets one run that trains every step to its cap show
    where each form would have stopped (``benchmarks/accuracy/em_stops.py``); its windows
    go into checkpoints, so a resumed run logs the same values.
    """

    def __init__(self) -> None:
        # threshold and patience do not matter: only the values are read
        self.detectors = {
            name: ConvergenceDetector(window, 0.5, 1, variant, norm, sample)
            for name, (window, variant, norm, sample) in CANDIDATES.items()
        }

    def reset(self, start: torch.Tensor) -> None:
        """Start watching a new block."""
        for d in self.detectors.values():
            d.reset(start)

    def update(self, params: torch.Tensor, noise: float) -> dict[str, float | None]:
        """Each form's EM after this round (None until its window is full)."""
        return {name: d.update(params, noise) for name, d in self.detectors.items()}

    def state_dict(self) -> dict:
        """Every form's window, for checkpoints."""
        return {name: d.state_dict() for name, d in self.detectors.items()}

    def load_state_dict(self, state: dict) -> None:
        """Continue every form's window (forms added since start empty)."""
        for name, d in self.detectors.items():
            if name in state:
                d.load_state_dict(state[name])
