"""The composed configuration as typed settings: what the server reads of it.

:class:`~profl_strategy.engine.protocol.RunSpec` is what every message carries, so it holds
only what a node needs. :class:`ServerSpec` extends it with what the server alone
reads: the round budget, the method, its schedule and effective movement, round
rules, evaluation and output. It is built once, at the edge (the ServerApp, the
benchmarks), from the validated Hydra config; below it nothing reads the config by
path. The method's own options (a baseline's width ratios, ProFL's plans) still
travel as ``MethodSpec.options``, the composed ``method`` group as a dict.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from profl_strategy.engine.protocol import RunSpec


@dataclass(frozen=True)
class MethodSpec:
    """Which method runs, and its ``conf/method`` group."""

    name: str
    strategy: str  # ``module.Class`` of its Strategy
    full_model: bool
    memory_aware: bool
    options: dict[str, Any]  # the whole composed group, for a method's own options


@dataclass(frozen=True)
class ScheduleSpec:
    """Steps and round caps of ProFL's schedule.

    See :class:`~profl_strategy.methods.profl.schedule.ProgressiveSchedule`; a
    ``full_model`` method ignores them (its schedule is one step for ``num_rounds``).
    """

    min_rounds_per_step: int
    max_rounds_stage1: int
    max_rounds_stage2: int
    shrink: bool
    share_rounds: bool
    share_by: str
    condense: str
    condense_rounds: int


@dataclass(frozen=True)
class EMSpec:
    """Effective movement (:class:`~profl_strategy.methods.profl.movement.ConvergenceDetector`)."""

    window: int
    threshold: float
    patience: int
    variant: str
    norm: str
    sample: int
    end_last: bool
    stop: str
    min_share: float


@dataclass(frozen=True)
class RoundSpec:
    """How a round selects nodes and when it counts."""

    fraction: float
    min_nodes: int
    min_replies: int
    timeout: float


@dataclass(frozen=True)
class EvalSpec:
    """Server-side scoring on the test split."""

    every: int
    batch_size: int
    test_size: int
    final_average: int


@dataclass(frozen=True)
class ServerSpec:
    """A run as the server sees it: :class:`RunSpec` and everything only it reads."""

    run: RunSpec
    num_rounds: int
    method: MethodSpec
    schedule: ScheduleSpec
    em: EMSpec
    rounds: RoundSpec
    eval: EvalSpec
    checkpoint_every: int
    output_dir: str
    resume: str
    config: dict[str, Any]  # the composed config, resolved: results.json and checkpoints

    @property
    def seed(self) -> int:
        return self.run.seed

    @classmethod
    def from_config(cls, cfg: DictConfig, run: RunSpec) -> ServerSpec:
        """Read a validated config (:func:`profl_strategy.run.config.compose_config`) once."""
        m, em, t, e = cfg.method, cfg.method.em, cfg.train, cfg.eval
        return cls(
            run=run,
            num_rounds=int(cfg.num_rounds),
            method=MethodSpec(
                str(m.name),
                str(m.strategy),
                bool(m.full_model),
                bool(m.memory_aware),
                OmegaConf.to_container(m, resolve=True),  # type: ignore[arg-type]
            ),
            schedule=ScheduleSpec(
                int(m.min_rounds_per_step),
                int(m.max_rounds_stage1),
                int(m.max_rounds_stage2),
                bool(m.shrink),
                bool(m.share_rounds),
                str(m.share_by),
                str(m.condense),
                int(m.condense_rounds),
            ),
            em=EMSpec(
                int(em.window),
                float(em.threshold),
                int(em.patience),
                str(em.variant),
                str(em.norm),
                int(em.sample),
                bool(em.end_last),
                str(em.stop),
                float(em.min_share),
            ),
            rounds=RoundSpec(
                float(t.fraction), int(t.min_nodes), int(t.min_replies), float(t.timeout)
            ),
            eval=EvalSpec(int(e.every), int(e.batch_size), int(e.test_size), int(e.final_average)),
            checkpoint_every=int(cfg.checkpoint.every),
            output_dir=str(cfg.output.dir),
            resume=str(cfg.resume),
            config=OmegaConf.to_container(cfg, resolve=True),  # type: ignore[arg-type]
        )

    def resume_path(self) -> Path | None:
        """The run folder or checkpoint to continue (None: a new run)."""
        return Path(self.resume).expanduser() if self.resume else None
