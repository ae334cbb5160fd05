"""The deliverable model averaged over a run's last rounds (server-side tail averaging).

With a few non-IID nodes a round, the global model moves with each round's sample,
so the last round's model is one noisy draw: ``cifar10_long`` FedAvg-full, seed 0,
600 rounds, scored 0.484 after its last round against 0.563 on average over its last
quarter. The mean of the deliverable models of the last ``N`` rounds (Polyak
averaging on the server) costs the nodes nothing. ProFL's deliverable changes
architecture between steps, so the window restarts whenever its arrays change.
"""

from __future__ import annotations

from collections import deque

import torch
from torch import nn

State = dict[str, torch.Tensor]


class TailAverage:
    """The deliverable models of the last ``rounds`` rounds, and their mean."""

    def __init__(self, rounds: int) -> None:
        if rounds < 1:
            raise ValueError(f"final-average must be >= 1 round here, got {rounds}")
        self.states: deque[State] = deque(maxlen=rounds)

    def push(self, model: nn.Module) -> None:
        """Record the deliverable model after a round (a new architecture restarts)."""
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        if self.states and not same_layout(self.states[-1], state):
            self.states.clear()
        self.states.append(state)

    def average(self) -> State | None:
        """Mean of the recorded floating-point arrays (counters: the latest); None if empty."""
        if not self.states:
            return None
        last = self.states[-1]
        return {
            k: torch.stack([s[k] for s in self.states]).mean(0) if v.is_floating_point() else v
            for k, v in last.items()
        }

    def state_dict(self) -> dict:
        """The window, for checkpoints."""
        return {"states": list(self.states)}

    def load_state_dict(self, state: dict) -> None:
        """Continue the window from a checkpoint."""
        self.states = deque(state["states"], maxlen=self.states.maxlen)


def same_layout(a: State, b: State) -> bool:
    """Whether two state dicts have the same keys and shapes."""
    return a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)
