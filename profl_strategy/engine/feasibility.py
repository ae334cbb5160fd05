"""Stop a run before its first training round when no node can hold what it needs.

Budgets are only known once the nodes have answered the budget query, so this
check runs at the start of :meth:`ProFL.start`, not in :mod:`config`. A step no
node can hold would otherwise be skipped, leaving an untrained block in the
final model, or a baseline would idle through every round.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from profl_strategy.engine.errors import ConfigError


class InfeasibleRunError(ConfigError):
    """The memory budgets of the online nodes cannot hold a step of this run."""


def check_feasible(needs: Mapping[str, float], budgets: Iterable[float], batch_size: int) -> None:
    """Raise :class:`InfeasibleRunError` naming every step that no budget holds.

    Parameters
    ----------
    needs : Mapping[str, float]
        Estimated peak training memory (MB) of each step or sub-model the run
        must train, by a name a user can read (``s2b1``, ``the smallest tier``).
    budgets : Iterable[float]
        Memory budgets (MB) of the nodes known at the start.
    batch_size : int
        The local batch size the estimates were made for.
    """
    budgets = sorted(budgets)
    if not budgets:
        raise InfeasibleRunError(
            "no node answered the budget query before training: check that the "
            "SuperNodes are online (simulation: num-supernodes >= 1; deployment: "
            "deploy/up.sh) and that round-timeout leaves them time to answer"
        )
    largest = budgets[-1]
    missing = {name: need for name, need in needs.items() if need > largest}
    if not missing:
        return
    steps = ", ".join(f"{name} (needs {need:.1f} MB)" for name, need in missing.items())
    raise InfeasibleRunError(
        f"batch-size={batch_size} with these memory budgets leaves no node able to train "
        f"{steps}; the largest budget of the {len(budgets)} nodes online is {largest:.1f} MB. "
        "Lower batch-size, choose a memory profile with larger budgets (memory-profile=..., "
        "or node-config memory-mb on real devices), or a narrower model (width=...)."
    )
