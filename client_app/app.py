"""The ClientApp: every handler of every method, registered here, explicitly.

ProFL's handlers live in :mod:`client_app.step`, the baselines' in
:mod:`client_app.baselines`; both build on :mod:`client_app.node`. The message
types are :mod:`profl_strategy.engine.protocol`'s (``<category>.<action>``).
"""

from __future__ import annotations

from collections.abc import Callable

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from client_app.baselines import bn_statistics, train_depth, train_width
from client_app.mods import pin_threads, skip_expired
from client_app.step import budget, train
from profl_strategy.engine.protocol import (
    QUERY_BN_STATS,
    QUERY_BUDGET,
    TRAIN_DEPTH,
    TRAIN_STEP,
    TRAIN_WIDTH,
)

Handler = Callable[[Message, Context], Message]
HANDLERS: dict[str, Handler] = {
    QUERY_BUDGET: budget,
    TRAIN_STEP: train,
    TRAIN_WIDTH: train_width,
    TRAIN_DEPTH: train_depth,
    QUERY_BN_STATS: bn_statistics,
}

app = ClientApp(mods=[skip_expired, pin_threads])
for message_type, handler in HANDLERS.items():
    category, action = message_type.split(".")
    getattr(app, category)(action)(handler)

__all__ = ["HANDLERS", "app", "bn_statistics", "budget", "train", "train_depth", "train_width"]
