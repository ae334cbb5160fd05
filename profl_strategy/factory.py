"""From a composed configuration to what a run needs: the run spec and the method's strategy.

Used by the ServerApp and the benchmarks alike, so both build a method the same way.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from profl_strategy.engine import Engine
from profl_strategy.memory import block_parameter_counts, estimate_full
from profl_strategy.movement import ConvergenceDetector
from profl_strategy.protocol import DataSpec, RunSpec, TrainSpec
from profl_strategy.schedule import ProgressiveSchedule
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


def condense_rounds(method: DictConfig) -> int:
    """Rounds of each stage-1 condensing step (0: condense by copying layers, no step)."""
    return int(method.condense_rounds) if method.condense == "distill" else 0


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
    """What every message of the run carries (:mod:`profl_strategy.protocol`)."""
    key, t = model_key(cfg), cfg.train
    data = DataSpec(
        cfg.dataset.name,
        data_dir_of(cfg),
        cfg.data.partitioner,
        float(cfg.data.alpha),
        int(cfg.data.shards_per_partition),
        float(cfg.data.subsample),
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


def build_strategy(cfg: DictConfig, run: RunSpec) -> Engine:
    """The method's Strategy (``method.strategy``) with its schedule (and EM detector)."""
    m = cfg.method
    schedule = ProgressiveSchedule(
        run.model.spec().num_blocks,
        m.min_rounds_per_step,
        m.max_rounds_stage1,
        m.max_rounds_stage2,
        shrink=m.shrink,
        full_model_rounds=cfg.num_rounds if m.full_model else 0,
        budget=cfg.num_rounds if m.share_rounds else 0,
        condense_rounds=condense_rounds(m),
        share_weights=share_weights(run.model, str(m.share_by)),
        em_ends_last=bool(m.em.end_last),
        em_stop=str(m.em.stop),
        em_min_share=float(m.em.min_share),
    )
    method = get_class(m.strategy)
    extra = {}
    if "detector" in inspect.signature(method).parameters:  # ProFL's effective movement
        extra["detector"] = ConvergenceDetector(
            m.em.window, m.em.threshold, m.em.patience, m.em.variant, m.em.norm, m.em.sample
        )
    return method(
        run=run,
        schedule=schedule,
        **extra,
        fraction_train=float(cfg.train.fraction),
        min_train_nodes=int(cfg.train.min_nodes),
        seed=cfg.seed,
        eval_every=int(cfg.eval.every),
        memory_aware=bool(m.memory_aware),
        min_replies=int(cfg.train.min_replies),
        method_config=OmegaConf.to_container(m, resolve=True),
        final_average=int(cfg.eval.final_average),
    )
