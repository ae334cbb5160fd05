"""From a composed configuration to what a run needs: the typed specs and the method's strategy.

Used by the ServerApp and the benchmarks alike, so both build a method the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.utils import get_class, instantiate
from omegaconf import DictConfig

from profl_strategy.engine.engine import Engine
from profl_strategy.engine.errors import ConfigError
from profl_strategy.engine.fixed_schedule import FixedSchedule
from profl_strategy.engine.method import Schedule
from profl_strategy.engine.protocol import DataSpec, RunSpec, TrainSpec
from profl_strategy.engine.step import STAGE_FULL, Step
from profl_strategy.memory.model import block_parameter_counts, estimate_full
from profl_strategy.methods.profl.movement import ConvergenceDetector
from profl_strategy.methods.profl.schedule import ProgressiveSchedule
from profl_strategy.run.server_spec import ScheduleSpec, ServerSpec
from profl_strategy.task.dataset_info import get_info
from profl_strategy.task.model_key import ModelKey


def model_key(cfg: DictConfig) -> ModelKey:
    """The model's shape key from a composed configuration."""
    info = get_info(cfg.dataset.name)
    return ModelKey(
        cfg.model.name,
        info.num_classes,
        info.input_shape,
        float(cfg.model.width),
        int(cfg.method.output_depth),
        str(cfg.method.stage1_prefix),
    )


def condense_rounds(schedule: ScheduleSpec) -> int:
    """Rounds of each stage-1 condensing step (0: condense by copying layers, no step)."""
    return schedule.condense_rounds if schedule.condense == "distill" else 0


def share_weights(key: ModelKey, share_by: str) -> list[float] | None:
    """Per-block weights of stage 2's round shares (None: equal shares)."""
    if share_by == "equal":
        return None
    counts = block_parameter_counts(key)
    return [float(c) ** 0.5 if share_by == "sqrt-params" else float(c) for c in counts]


def data_dir_of(cfg: DictConfig) -> str:
    """``data.data_dir`` as an absolute path ('' for the hub)."""
    return str(Path(cfg.data.data_dir).expanduser().resolve()) if cfg.data.data_dir else ""


def run_spec(cfg: DictConfig) -> RunSpec:
    """What every message of the run carries (:mod:`profl_strategy.engine.protocol`)."""
    key, t = model_key(cfg), cfg.train
    data = DataSpec(
        cfg.dataset.name,
        data_dir_of(cfg),
        cfg.data.partitioner,
        float(cfg.data.alpha),
        int(cfg.data.shards_per_partition),
        float(cfg.data.subsample),
        float(cfg.data.val_fraction),
    )
    train = TrainSpec(
        int(t.batch_size),
        int(t.local_epochs),
        float(t.lr),
        float(t.momentum),
        float(t.weight_decay),
        float(cfg.method.proximal_mu),
        channels_last=bool(t.channels_last),
    )
    profile = instantiate(cfg.memory, _convert_="all")
    full = estimate_full(key, train.batch_size).total_mb
    return RunSpec(key, data, train, profile, float(full), int(cfg.seed))


def server_spec(cfg: DictConfig) -> ServerSpec:
    """A validated configuration as the server's typed settings (:class:`ServerSpec`)."""
    return ServerSpec.from_config(cfg, run_spec(cfg))


def build_schedule(spec: ServerSpec) -> Schedule:
    """The method's schedule: what each round trains and when the run ends.

    A whole-model method (``method.full_model``) trains one full-model step for the
    run's ``num_rounds`` (:class:`FixedSchedule`); ProFL walks its blocks
    (:class:`ProgressiveSchedule`, from ``method``'s schedule and ``em`` keys).
    """
    blocks = spec.run.model.spec().num_blocks
    if spec.method.full_model:
        return FixedSchedule(Step(STAGE_FULL, blocks - 1), spec.num_rounds)
    s, em = spec.schedule, spec.em
    return ProgressiveSchedule(
        blocks,
        s.min_rounds_per_step,
        s.max_rounds_stage1,
        s.max_rounds_stage2,
        shrink=s.shrink,
        budget=spec.num_rounds if s.share_rounds else 0,
        condense_rounds=condense_rounds(s),
        share_weights=share_weights(spec.run.model, s.share_by),
        em_ends_last=em.end_last,
        em_stop=em.stop,
        em_min_share=em.min_share,
    )


def build_strategy(spec: ServerSpec) -> Engine:
    """The method's Strategy (``method.strategy``) with its schedule (and EM detector).

    Every argument is named here: a method that declares
    :attr:`~profl_strategy.engine.engine.Engine.takes_detector` (ProFL, ProFL + FedProx)
    gets the effective-movement detector as well, every other one the engine's
    arguments only.
    """
    m, em, rounds = spec.method, spec.em, spec.rounds
    engine: dict[str, Any] = {
        "run": spec.run,
        "schedule": build_schedule(spec),
        "fraction_train": rounds.fraction,
        "min_train_nodes": rounds.min_nodes,
        "seed": spec.seed,
        "eval_every": spec.eval.every,
        "memory_aware": m.memory_aware,
        "min_replies": rounds.min_replies,
        "method_config": m.options,
        "final_average": spec.eval.final_average,
    }
    method = get_class(m.strategy)
    if not (isinstance(method, type) and issubclass(method, Engine)):
        raise ConfigError(
            f"method.strategy {m.strategy!r} is not a strategy of this app's engine "
            "(profl_strategy.engine.engine.Engine): name one of conf/method/'s strategies"
        )
    if method.takes_detector:
        engine["detector"] = ConvergenceDetector(
            em.window, em.threshold, em.patience, em.variant, em.norm, em.sample
        )
    return method(**engine)
