"""Flower mods (ClientApp middleware) of this app."""

from __future__ import annotations

import os
import sys
import time
from logging import INFO, WARNING

from flwr.app import Context, Message
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import log

from profl_strategy.engine.protocol import Expired
from profl_strategy.task.cpus import usable_cpus


def skip_expired(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Do not run a message whose TTL (the server's round timeout) has passed.

    The server stopped waiting for it and the SuperLink drops the reply, so
    training would only delay the next rounds' messages queued behind it: in
    simulation a slow round would otherwise leave a backlog that never drains.
    """
    md = msg.metadata
    late = time.time() - (md.created_at + md.ttl)
    if md.ttl and late > 0:
        log(
            WARNING,
            "%s of round %s expired %.0f s ago: not run",
            md.message_type,
            md.group_id,
            late,
        )
        return Message(Expired(late).content(), reply_to=msg)
    return call_next(msg, context)


def torch_threads() -> tuple[int, str]:
    """How many intra-op threads training may use here, and why.

    ``PROFL_TORCH_THREADS`` if set: an explicit choice wins. In a simulation actor:
    the CPUs Ray gave it (``client-resources-num-cpus``), so actors sharing a
    machine do not oversubscribe its cores. Elsewhere: ``OMP_NUM_THREADS`` if set
    (``deploy/up.sh`` sets it per SuperNode), else the CPUs this process may use.
    """
    if os.environ.get("PROFL_TORCH_THREADS", "").isdigit():
        return max(1, int(os.environ["PROFL_TORCH_THREADS"])), "PROFL_TORCH_THREADS"
    ray = sys.modules.get("ray")  # only if the simulation engine loaded it
    if ray is not None and ray.is_initialized():
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
        if cpus:
            return min(max(1, int(cpus)), usable_cpus()), "Ray CPUs of this actor"
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"])), "OMP_NUM_THREADS"
    return usable_cpus(), "usable CPUs"


def pin_threads(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Set torch's thread count once per process, before the first message trains."""
    import torch  # the handler imports it anyway; a budget query runs after this

    threads, why = torch_threads()
    if torch.get_num_threads() != threads:
        log(INFO, "torch threads: %d (%s; was %d)", threads, why, torch.get_num_threads())
        torch.set_num_threads(threads)
    return call_next(msg, context)
