"""Strategies as ``run_profl`` builds them, without a run (no grid, no data)."""

from __future__ import annotations

from hydra.utils import instantiate
from omegaconf import OmegaConf

from profl_strategy.engine.budgets import MemoryProfile
from profl_strategy.engine.fixed_schedule import FixedSchedule
from profl_strategy.engine.protocol import DataSpec, RunSpec, TrainSpec
from profl_strategy.engine.step import STAGE_FULL, Step
from profl_strategy.methods.baselines.submodel import TieredMethod
from profl_strategy.methods.profl.movement import ConvergenceDetector
from profl_strategy.methods.profl.schedule import ProgressiveSchedule
from profl_strategy.methods.profl.strategy import ProFL
from profl_strategy.run.config import CONF_DIR
from profl_strategy.task.model_key import ModelKey

CNN = ModelKey("cnn", 10, (1, 28, 28), 0.25)


def profile(name: str) -> MemoryProfile:
    """The memory profile ``conf/memory/<name>.yaml``."""
    return instantiate(OmegaConf.load(CONF_DIR / "memory" / f"{name}.yaml"), _convert_="all")


def run_of(key: ModelKey) -> RunSpec:
    """The run every message would carry (batch size 8, a uniform memory profile)."""
    return RunSpec(
        model=key,
        data=DataSpec("fmnist", "", "iid", 0.5, 2),
        train=TrainSpec(batch_size=8, local_epochs=1, lr=0.01, momentum=0.9, weight_decay=0.0),
        memory=MemoryProfile("uniform", (1,), (1.0,)),
        full_peak_mb=100.0,
        seed=0,
    )


def strategy(cls: type[TieredMethod], key: ModelKey = CNN, **options: object) -> TieredMethod:
    """A baseline strategy as run_profl builds it, without a run."""
    blocks = key.spec().num_blocks
    return cls(
        run=run_of(key),
        schedule=FixedSchedule(Step(STAGE_FULL, blocks - 1), 2),
        fraction_train=1.0,
        min_train_nodes=1,
        seed=0,
        method_config=dict(options),
    )


def query_run() -> RunSpec:
    """What a budget query carries, for the in-process nodes."""
    cnn = ModelKey("cnn", 10, (1, 28, 28), 0.25, 1)
    return RunSpec(
        model=cnn,
        data=DataSpec("fmnist", "", "iid", 0.5, 2),
        train=TrainSpec(batch_size=8, local_epochs=1, lr=0.01, momentum=0.9, weight_decay=0.0),
        memory=profile("uniform"),
        full_peak_mb=100.0,
        seed=0,
    )


def profl() -> ProFL:
    """A ProFL strategy as run_profl builds it, without a run."""
    run = query_run()
    return ProFL(
        run=run,
        schedule=ProgressiveSchedule(run.model.spec().num_blocks, 1, 1, 1),
        detector=ConvergenceDetector(2, 0.5, 1),
        fraction_train=1.0,
        min_train_nodes=1,
        seed=0,
    )
