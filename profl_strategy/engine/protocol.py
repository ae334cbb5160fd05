"""What travels between the strategies and the ClientApp: the one place it is spelled.

Every message carries a :class:`RunSpec` (what stays fixed for the run) and one
order; every reply is one of the reply classes. Each class turns into Flower
records with ``to_record``/``content`` and back with ``from_record``/``from_content``.
Record keys are the field names in kebab case (``batch_size`` -> ``batch-size``),
prefixed by the enclosing field for nested specs (``train.batch-size``), so no
key is written out anywhere else. The ClientApp reads everything run-specific
from the message, never from ``context.run_config``: the same client code then
works in simulation, in deployment and in tests, and a node checks an order
against its own budget with the very memory model the server used.
"""

from __future__ import annotations

import math
import types
from dataclasses import dataclass, fields, is_dataclass
from typing import Any, ClassVar, Union, get_args, get_origin, get_type_hints

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from profl_strategy.engine.budgets import MemoryProfile
from profl_strategy.engine.step import Step
from profl_strategy.task.model_key import ModelKey

# Message types (``<category>.<handler>``, as the ClientApp registers them).
QUERY_BUDGET = "query.budget"
QUERY_BN_STATS = "query.bnstats"  # HeteroFL, FedRolex: BN statistics of the global model
TRAIN_STEP = "train.step"  # ProFL and the full-model methods: one step of the schedule
TRAIN_WIDTH = "train.width"  # AllSmall, HeteroFL, FedRolex: a width-scaled whole model
TRAIN_DEPTH = "train.depth"  # DepthFL, InclusiveFL: the first k blocks and heads

# Record names inside a message's RecordDict.
CONFIG, ARRAYS, METRICS = "config", "arrays", "metrics"
NUM_EXAMPLES = "num-examples"  # the weighting metric of every merge
ESTIMATE_TOLERANCE_MB = 1e-3  # server and node estimates that differ by more disagree


# ---- records <-> dataclasses -----------------------------------------------------------
def _key(name: str) -> str:
    return name.replace("_", "-")


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """A dataclass as flat record entries; nested dataclasses get ``<field>.`` prefixes."""
    out: dict[str, Any] = {}
    for f in fields(obj):
        value, key = getattr(obj, f.name), prefix + _key(f.name)
        if is_dataclass(value):
            out.update(flatten(value, key + "."))
        elif isinstance(value, tuple):
            out[key] = list(value)
        elif value is not None:
            out[key] = value
    return out


def _coerce(kind: Any, value: Any) -> Any:
    origin = get_origin(kind)
    if origin is tuple:
        return tuple(get_args(kind)[0](v) for v in value)
    if origin in (Union, types.UnionType):
        return _coerce(next(a for a in get_args(kind) if a is not type(None)), value)
    return kind(value)


def unflatten(cls: type, rec: dict[str, Any] | ConfigRecord, prefix: str = "") -> Any:
    """Rebuild ``cls`` from :func:`flatten`'s entries; absent keys take the field default."""
    hints, kwargs = get_type_hints(cls), {}
    for f in fields(cls):
        kind, key = hints[f.name], prefix + _key(f.name)
        if is_dataclass(kind):
            kwargs[f.name] = unflatten(kind, rec, key + ".")  # type: ignore[arg-type]
        elif key in rec:
            kwargs[f.name] = _coerce(kind, rec[key])
    return cls(**kwargs)


# ---- the run --------------------------------------------------------------------------
@dataclass(frozen=True)
class DataSpec:
    """Which data a node trains on, and how the dataset is split into partitions.

    ``val_fraction`` of the train split is the server's validation split: every node
    leaves those rows out before partitioning (0: none held out).
    """

    dataset: str
    data_dir: str
    partitioner: str
    alpha: float
    shards_per_partition: int
    subsample: float = 1.0
    val_fraction: float = 0.0


@dataclass(frozen=True)
class TrainSpec:
    """Local training hyper-parameters, the same for every method."""

    batch_size: int
    local_epochs: int
    lr: float
    momentum: float
    weight_decay: float
    proximal_mu: float = 0.0
    channels_last: bool = False  # image batches channels-last (make_loader)

    def hyper(self, **more: Any) -> dict[str, Any]:
        """Keyword arguments of :func:`profl_strategy.task.train.train_step`."""
        return {
            "epochs": self.local_epochs,
            "lr": self.lr,
            "momentum": self.momentum,
            "weight_decay": self.weight_decay,
            "proximal_mu": self.proximal_mu,
        } | more


@dataclass(frozen=True)
class RunSpec:
    """What every message carries: model, data, training and memory settings of the run."""

    model: ModelKey
    data: DataSpec
    train: TrainSpec
    memory: MemoryProfile
    full_peak_mb: float
    seed: int

    def to_record(self) -> ConfigRecord:
        return ConfigRecord(flatten(self))

    @classmethod
    def from_record(cls, rec: ConfigRecord) -> RunSpec:
        return unflatten(cls, rec)


# ---- orders (server -> node) ----------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Order:
    """A request to a node: the run, the round, and the server's estimate of its peak.

    The node recomputes ``need_mb`` with its own memory model and refuses the
    order if the two disagree (a node on other code) or if it exceeds its budget
    (unless ``enforce_budget`` is off: the references that ignore memory).
    """

    message_type: ClassVar[str] = ""
    run: RunSpec
    server_round: int
    need_mb: float
    enforce_budget: bool = True

    def to_record(self) -> ConfigRecord:
        return ConfigRecord(flatten(self))

    @classmethod
    def from_record(cls, rec: ConfigRecord) -> Order:
        return unflatten(cls, rec)

    def message(self, arrays: ArrayRecord, node: int, ttl: float) -> Message:
        """The message for ``node``; unanswered after ``ttl`` s the SuperLink drops it."""
        content = RecordDict({ARRAYS: arrays, CONFIG: self.to_record()})
        return Message(
            content,
            dst_node_id=node,
            message_type=self.message_type,
            group_id=str(self.server_round),
            ttl=ttl,
        )

    def disagrees(self, own_mb: float) -> str | None:
        """Why this node's own estimate contradicts the server's, or None."""
        if math.isclose(own_mb, self.need_mb, rel_tol=1e-6, abs_tol=ESTIMATE_TOLERANCE_MB):
            return None
        return (
            f"the server estimates {self.need_mb:.3f} MB for this order, this node "
            f"{own_mb:.3f} MB: server and node run different code; update the node"
        )


@dataclass(frozen=True, kw_only=True)
class StepOrder(Order):
    """Train one step of the schedule (ProFL, and the full-model methods' one step)."""

    message_type: ClassVar[str] = TRAIN_STEP
    step: Step
    plan: str | None = None  # a plan label (profl_strategy.memory.plans) when plans are on


@dataclass(frozen=True, kw_only=True)
class WidthOrder(Order):
    """Train the whole model at ``ratio`` times the run's width."""

    message_type: ClassVar[str] = TRAIN_WIDTH
    ratio: float
    label_mask: bool = False


@dataclass(frozen=True, kw_only=True)
class DepthOrder(Order):
    """Train blocks ``0 .. depth-1`` with classifier heads ``heads``."""

    message_type: ClassVar[str] = TRAIN_DEPTH
    depth: int
    heads: tuple[int, ...]
    kd_weight: float = 0.0


@dataclass(frozen=True, kw_only=True)
class BNStatsQuery(Order):
    """Report BN statistics of the global full model on the node's data (static BN)."""

    message_type: ClassVar[str] = QUERY_BN_STATS


@dataclass(frozen=True)
class BudgetQuery:
    """Ask a node for the memory it gives to training (it needs the run to work it out)."""

    message_type: ClassVar[str] = QUERY_BUDGET
    run: RunSpec

    def message(self, node: int, server_round: int, ttl: float) -> Message:
        return Message(
            RecordDict({CONFIG: self.run.to_record()}),
            dst_node_id=node,
            message_type=self.message_type,
            group_id=str(server_round),
            ttl=ttl,
        )

    @classmethod
    def from_record(cls, rec: ConfigRecord) -> BudgetQuery:
        return cls(RunSpec.from_record(rec))


# ---- replies (node -> server) ---------------------------------------------------------
@dataclass(frozen=True)
class Reply:
    """A node's answer. Numbers travel as metrics, text and flags as config, arrays beside.

    ``config["reply"]`` names the kind, so :func:`read_reply` gives back the class.
    """

    kind: ClassVar[str] = ""

    def content(self, arrays: ArrayRecord | None = None) -> RecordDict:
        metrics: dict[str, Any] = {}
        config: dict[str, Any] = {REPLY: self.kind}
        for key, value in flatten(self).items():
            (config if isinstance(value, str | bool) else metrics)[key] = value
        rec = RecordDict({CONFIG: ConfigRecord(config)})
        if metrics:
            rec[METRICS] = MetricRecord(metrics)
        if arrays is not None:
            rec[ARRAYS] = arrays
        return rec

    @classmethod
    def from_content(cls, content: RecordDict) -> Any:
        found = dict(content.metric_records.get(METRICS, {}))
        found |= dict(content.config_records.get(CONFIG, {}))  # type: ignore[arg-type]
        return unflatten(cls, found)


@dataclass(frozen=True)
class Trained(Reply):
    """A trained sub-model's metrics (its arrays travel beside them)."""

    kind: ClassVar[str] = "trained"
    num_examples: int
    train_loss: float
    need_mb: float
    memory_mb: float
    peak_mb_measured: float = 0.0
    examples_seen: int = 0
    labels: tuple[int, ...] | None = None  # classes present (HeteroFL's masked classifier)
    plan: str | None = None  # the plan label a StepOrder was trained with
    # whole-call figures over the idle ClientApp (model + data + runtime), to which the
    # measured peak compares; "strict" when the node held calls to them (client_app.node)
    call_budget_mb: float = 0.0
    call_predicted_mb: float = 0.0
    memory_policy: str = ""


@dataclass(frozen=True)
class Refused(Reply):
    """The node will not run the order: over its budget, or its estimate disagrees."""

    kind: ClassVar[str] = "refused"
    need_mb: float
    memory_mb: float
    reason: str = "over budget"
    measured_mb: float = 0.0  # > 0: the node's guard stopped the call at this measured peak


@dataclass(frozen=True)
class Statistics(Reply):
    """BN statistics of the global model on a node's data (arrays beside)."""

    kind: ClassVar[str] = "statistics"
    num_examples: int
    need_mb: float


@dataclass(frozen=True)
class Budget(Reply):
    """A node's training budget, where it came from, and its data partition."""

    kind: ClassVar[str] = "budget"
    memory_mb: float
    source: str
    partition_id: int = -1
    device: str = "cpu"  # where it trains: "cpu" or "cuda" (host-side plans save nothing on a CPU)
    idle_mb: float = 0.0  # the idle ClientApp's resident size (CPU), measured


@dataclass(frozen=True)
class ConfigProblem(Reply):
    """A node whose node-config the run cannot use says why, in the user's words."""

    kind: ClassVar[str] = "config-problem"
    config_error: str


@dataclass(frozen=True)
class Expired(Reply):
    """The node skipped an order whose TTL had passed (the server stopped waiting)."""

    kind: ClassVar[str] = "expired"
    late_s: float


REPLY = "reply"
REPLIES: dict[str, type[Reply]] = {
    c.kind: c for c in (Trained, Refused, Statistics, Budget, ConfigProblem, Expired)
}


def read_reply(content: RecordDict) -> Reply | None:
    """The typed reply in ``content``, or None if it names no known kind."""
    config = content.config_records.get(CONFIG)
    kind = REPLIES.get(str(config.get(REPLY, ""))) if config is not None else None
    if kind is None:
        return None
    try:
        return kind.from_content(content)
    except (KeyError, TypeError, ValueError):
        return None
