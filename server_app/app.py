"""ProFL ServerApp: validate the configuration, then run both stages."""

from __future__ import annotations

import time
from logging import INFO, WARNING
from pathlib import Path

from flwr.app import ConfigRecord, Context
from flwr.common import log
from flwr.serverapp import Grid, ServerApp
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from client_app.dataset import get_info
from profl_strategy import checkpoint
from profl_strategy.checkpoint import fingerprint
from profl_strategy.config import ConfigError, compose_config
from profl_strategy.memory import ModelKey, estimate_full, estimate_step
from profl_strategy.movement import ConvergenceDetector
from profl_strategy.protocol import run_record
from profl_strategy.schedule import ProgressiveSchedule
from profl_strategy.strategy import ProFL
from server_app.evaluate import TestSetEvaluator
from server_app.local_superlink import startup_notes
from server_app.results import RunRecorder

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Compose and check the configuration, then train progressively."""
    where, costly = startup_notes()
    log(INFO, where)
    if costly:
        log(WARNING, costly)
    run_profl(grid, dict(context.run_config))


def model_key(cfg: DictConfig) -> ModelKey:
    """The model's shape key from a composed configuration."""
    info = get_info(cfg.dataset.name)
    return ModelKey(
        cfg.model.name,
        info.num_classes,
        info.input_shape,
        float(cfg.model.width),
        int(cfg.method.output_depth),
    )


def build_strategy(cfg: DictConfig, key: ModelKey, record: ConfigRecord) -> ProFL:
    """The method's Strategy (``method.strategy``) with its schedule and EM detector."""
    m = cfg.method
    schedule = ProgressiveSchedule(
        key.spec().num_blocks,
        m.min_rounds_per_step,
        m.max_rounds_stage1,
        m.max_rounds_stage2,
        shrink=m.shrink,
        full_model_rounds=cfg.num_rounds if m.full_model else 0,
        budget=cfg.num_rounds if m.share_rounds else 0,
    )
    detector = ConvergenceDetector(
        m.em.window, m.em.threshold, m.em.patience, m.em.variant, m.em.norm, m.em.sample
    )
    strategy_cls = get_class(m.strategy)
    return strategy_cls(
        model_key=key,
        schedule=schedule,
        detector=detector,
        run_config=record,
        batch_size=int(cfg.train.batch_size),
        fraction_train=float(cfg.train.fraction),
        min_train_nodes=int(cfg.train.min_nodes),
        seed=cfg.seed,
        eval_every=int(cfg.eval.every),
        memory_aware=bool(m.memory_aware),
        min_replies=int(cfg.train.min_replies),
        method_config=OmegaConf.to_container(m, resolve=True),
    )


def run_profl(grid: Grid, run_config: dict) -> dict:
    """The whole run on any Grid; returns the summary written to results.json."""
    cfg = compose_config(run_config)
    data_dir = str(Path(cfg.data.data_dir).expanduser().resolve()) if cfg.data.data_dir else ""
    key = model_key(cfg)
    batch = int(cfg.train.batch_size)
    full = estimate_full(key, batch)
    # The test split is loaded before training, so a bad data-dir or no network stops here.
    try:
        evaluator = TestSetEvaluator(cfg.dataset.name, data_dir, cfg.seed, cfg.eval.batch_size)
    except (FileNotFoundError, ValueError) as err:
        if not data_dir:
            raise
        raise ConfigError(
            f"'data-dir' = {data_dir!r} does not hold dataset '{cfg.dataset.name}': {err}"
        ) from err
    m = cfg.method
    profile = instantiate(cfg.memory, _convert_="all")
    record = run_record(
        model=key,
        profile=profile,
        full_peak_mb=full.total_mb,
        seed=cfg.seed,
        data={
            "dataset": cfg.dataset.name,
            "data-dir": data_dir,
            "partitioner": cfg.data.partitioner,
            "alpha": float(cfg.data.alpha),
            "shards": int(cfg.data.shards_per_partition),
            "subsample": float(cfg.data.subsample),
        },
        train={
            "batch-size": batch,
            "local-epochs": cfg.train.local_epochs,
            "lr": float(cfg.train.lr),
            "momentum": float(cfg.train.momentum),
            "weight-decay": float(cfg.train.weight_decay),
            "proximal-mu": float(m.proximal_mu),
        },
    )
    config = OmegaConf.to_container(cfg, resolve=True)
    config_hash = fingerprint(config)
    resumed = checkpoint.load(Path(cfg.resume).expanduser(), config_hash) if cfg.resume else None
    strategy = build_strategy(cfg, key, record)
    steps_mb = {
        str(s): round(estimate_step(key, s, batch).total_mb, 2) for s in strategy.schedule.steps
    }
    log(INFO, "estimated peak MB, full-model training %.2f; per step %s", full.total_mb, steps_mb)
    if cfg.resume:
        run_dir = Path(cfg.resume).expanduser().resolve()
        run_dir = run_dir if run_dir.is_dir() else run_dir.parent
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name = f"{cfg.method.name}-{cfg.dataset.name}-{cfg.model.name}-s{cfg.seed}-{stamp}"
        run_dir = Path(cfg.output.dir).expanduser().resolve() / name
    recorder = RunRecorder(run_dir, config)
    if resumed is not None:
        strategy.load_state_dict(resumed)
        recorder.data["rounds"] = list(strategy.history)
        log(INFO, "resumed %s at round %d", run_dir, strategy.server_round)

    def on_round(rec: dict) -> None:
        recorder.round(rec)
        every = int(cfg.checkpoint.every)
        if every and (strategy.server_round % every == 0 or strategy.schedule.done):
            checkpoint.save(run_dir / "checkpoint.pt", strategy.state_dict(), config_hash)

    strategy.on_round = on_round
    strategy.start(
        grid, num_rounds=cfg.num_rounds, timeout=float(cfg.train.timeout), evaluate_fn=evaluator
    )
    final = evaluator(-1, strategy.final_model())
    worst = max(steps_mb.values())
    summary = {
        "final_accuracy": final["accuracy"],
        "final_loss": final["loss"],
        "seed": cfg.seed,
        "rounds": strategy.server_round,
        "schedule_done": strategy.schedule.done,
        "refusals": strategy.refusals,
        "rejected_replies": sum(r.get("rejected", 0) for r in strategy.history),
        "rounds_without_update": sum(
            1
            for r in strategy.history
            if r.get("selected")
            and r.get("em") is None
            and r.get("aggregated", 0) < int(cfg.train.min_replies)
        ),
        "run_dir": str(run_dir),
        "full_model_peak_mb_est": round(full.total_mb, 2),
        "worst_step_peak_mb_est": worst,
        "peak_reduction": round(1 - worst / full.total_mb, 4),
        "step_peak_mb_est": steps_mb,
        "budgets_mb": sorted(round(b, 2) for b in strategy.budgets.values()),
        "transitions": [
            r["transition"] | {"round": r["round"], "step": f"s{r['stage']}b{r['block']}"}
            for r in strategy.history
            if "transition" in r
        ],
    }
    recorder.finish(summary)
    return summary
