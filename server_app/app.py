"""ProFL ServerApp: validate the configuration, then run both stages."""

from __future__ import annotations

import time
from logging import INFO
from pathlib import Path

from flwr.app import Context
from flwr.common import log
from flwr.serverapp import Grid, ServerApp
from hydra.utils import instantiate
from omegaconf import OmegaConf

from client_app.dataset import get_info
from profl_strategy.config import compose_config
from profl_strategy.memory import ModelKey, estimate_full, estimate_step
from profl_strategy.movement import ConvergenceDetector
from profl_strategy.protocol import run_record
from profl_strategy.schedule import ProgressiveSchedule
from profl_strategy.strategy import ProFL
from server_app.evaluate import TestSetEvaluator
from server_app.results import RunRecorder

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Compose and check the configuration, then train progressively."""
    cfg = compose_config(dict(context.run_config))
    data_dir = str(Path(cfg.data.data_dir).expanduser().resolve()) if cfg.data.data_dir else ""
    info = get_info(cfg.dataset.name)
    key = ModelKey(
        cfg.model.name,
        info.num_classes,
        info.input_shape,
        float(cfg.model.width),
        int(cfg.method.output_depth),
    )
    batch = int(cfg.train.batch_size)
    full = estimate_full(key, batch)
    # The test split is loaded before training, so a bad data-dir or no network stops here.
    evaluator = TestSetEvaluator(cfg.dataset.name, data_dir, cfg.seed, cfg.eval.batch_size)
    m = cfg.method
    schedule = ProgressiveSchedule(
        key.spec().num_blocks,
        m.min_rounds_per_step,
        m.max_rounds_stage1,
        m.max_rounds_stage2,
        shrink=m.shrink,
    )
    detector = ConvergenceDetector(m.em.window, m.em.threshold, m.em.patience, m.em.variant)
    profile = instantiate(cfg.memory, _convert_="all")
    steps_mb = {str(s): round(estimate_step(key, s, batch).total_mb, 2) for s in schedule.steps}
    log(INFO, "estimated peak MB, full-model training %.2f; per step %s", full.total_mb, steps_mb)
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
    out_dir = Path(cfg.output.dir).expanduser().resolve()
    name = f"{cfg.method.name}-{cfg.dataset.name}-{cfg.model.name}-s{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    recorder = RunRecorder(out_dir, name, OmegaConf.to_container(cfg, resolve=True))
    strategy = ProFL(
        model_key=key,
        schedule=schedule,
        detector=detector,
        run_config=record,
        batch_size=batch,
        fraction_train=float(cfg.train.fraction),
        min_train_nodes=int(cfg.train.min_nodes),
        seed=cfg.seed,
        eval_every=int(cfg.eval.every),
        on_round=recorder.round,
    )
    strategy.start(
        grid, num_rounds=cfg.num_rounds, timeout=float(cfg.train.timeout), evaluate_fn=evaluator
    )
    final = evaluator(-1, strategy.final_model())
    worst = max(steps_mb.values())
    recorder.finish(
        {
            "final_accuracy": final["accuracy"],
            "final_loss": final["loss"],
            "seed": cfg.seed,
            "rounds": len(strategy.history),
            "schedule_done": strategy.schedule.done,
            "refusals": strategy.refusals,
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
    )
