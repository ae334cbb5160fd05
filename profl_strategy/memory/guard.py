"""Stop a training call whose measured memory passes its budget, before the OS kills it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from profl_strategy.memory.peak import PeakMeter


class OverBudget(RuntimeError):
    """The call's measured peak passed its budget; training stopped."""

    def __init__(self, measured_mb: float, budget_mb: float) -> None:
        super().__init__(f"measured {measured_mb:.1f} MB passed the budget of {budget_mb:.1f} MB")
        self.measured_mb, self.budget_mb = measured_mb, budget_mb


@contextmanager
def budget_guard(meter: PeakMeter) -> Iterator[None]:
    """Raise :class:`OverBudget` at the next module call once ``meter`` has tripped.

    The meter's sampling thread cannot interrupt an operator, so the check runs
    where Python regains control: before every module's forward (a global
    hook), which in training is at most one layer after the crossing. Without
    a limit on the meter this does nothing.
    """
    if meter.limit_mb is None:
        yield
        return

    def check(_module: nn.Module, _args: Any) -> None:
        if meter.tripped.is_set():
            raise OverBudget(meter.current_mb(), float(meter.limit_mb or 0.0))

    handle = torch.nn.modules.module.register_module_forward_pre_hook(check)
    try:
        yield
        check(nn.Module(), ())  # a crossing in the last backward still refuses
    finally:
        handle.remove()
