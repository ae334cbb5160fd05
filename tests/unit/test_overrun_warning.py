"""The server names a node whose measured peak passed its budget or prediction."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from profl_strategy.engine.round_failures import NodeErrors
from profl_strategy.engine.rounds import warn_over


def _reply(peak: float, policy: str) -> SimpleNamespace:
    return SimpleNamespace(peak_mb_measured=peak, call_budget_mb=12.0, call_predicted_mb=10.0,
                           memory_policy=policy)  # fmt: skip


def test_a_strict_node_is_named_on_every_overrun_a_fast_one_once(caplog) -> None:  # noqa: ANN001
    errors = NodeErrors()
    with caplog.at_level(logging.WARNING, logger="flwr"):
        for node, peak, policy in [(1, 9.0, "strict"), (2, 11.0, "strict"), (2, 13.0, "strict"),
                                   (3, 11.0, "fast"), (3, 13.0, "fast")]:  # fmt: skip
            warn_over(node, _reply(peak, policy), errors)
    lines = [r.getMessage() for r in caplog.records]
    assert not any("node 1:" in line for line in lines)  # under both: nothing to say
    assert sum("node 2:" in line for line in lines) == 2
    assert "over the predicted 10.0 MB" in lines[0] and "over its budget of 12.0 MB" in lines[1]
    (fast,) = [line for line in lines if "node 3:" in line]
    assert "fast allocator policy" in fast and "memory-guard=true" in fast
