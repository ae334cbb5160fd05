"""ProFL ServerApp: validate the configuration, then run both stages."""

from __future__ import annotations

import time
from logging import INFO, WARNING
from pathlib import Path

from flwr.app import Context
from flwr.common import log
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import Result
from omegaconf import DictConfig

from profl_strategy.engine import checkpoint
from profl_strategy.engine.checkpoint import fingerprint
from profl_strategy.engine.engine import Engine
from profl_strategy.engine.errors import ConfigError
from profl_strategy.engine.protocol import RunSpec
from profl_strategy.run.config import compose_config, key_sources, source_lines
from profl_strategy.run.factory import build_strategy, server_spec
from profl_strategy.run.server_spec import ServerSpec
from profl_strategy.task.evaluate import HeldOutEvaluator
from server_app.local_superlink import startup_notes
from server_app.polling import PollingGrid
from server_app.results import RunRecorder

app = ServerApp()
FLOWER_DEFAULT_SUPERNODES = 2  # `flwr run .` without --federation-config


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Compose and check the configuration, then train progressively."""
    where, costly = startup_notes()
    log(INFO, where)
    if costly:
        log(WARNING, costly)
    if len(list(grid.get_node_ids())) == FLOWER_DEFAULT_SUPERNODES:
        log(WARNING, "2 SuperNodes (Flower's default simulation): each trains on half the "
            "training split, so a round takes minutes on a CPU. The presets are sized for 20: "
            "add --federation-config \"num-supernodes=20\" (README)")  # fmt: skip
    run_profl(PollingGrid(grid), dict(context.run_config))


def held_out_evaluator(spec: ServerSpec) -> HeldOutEvaluator:
    """The test split and the validation split, loaded before training: a bad data-dir
    stops the run here."""
    data = spec.run.data
    try:
        evaluator = HeldOutEvaluator(
            data.dataset,
            data.data_dir,
            spec.seed,
            spec.eval.batch_size,
            spec.eval.test_size,
            val_fraction=data.val_fraction,
            channels_last=spec.run.train.channels_last,
        )
    except (FileNotFoundError, ValueError) as err:
        if not data.data_dir:
            raise
        raise ConfigError(
            f"'data-dir' = {data.data_dir!r} does not hold dataset '{data.dataset}': {err}"
        ) from err
    if evaluator.val_examples:
        log(INFO, "validation split: %d training samples held out of every partition "
            "(val-fraction %g); settings are chosen on it, test accuracy is only reported",
            evaluator.val_examples, data.val_fraction)  # fmt: skip
    return evaluator


def run_dir_of(spec: ServerSpec | DictConfig) -> Path:
    """The run's folder: the resumed one, or a new one named after method, data and seed.

    A new folder is claimed with an exclusive ``mkdir`` (``-2``, ``-3``, ... on a clash):
    two runs started in the same second into one ``outputs-dir`` never share a folder
    (and its checkpoint). A composed config is read into a :class:`ServerSpec` first.
    """
    if isinstance(spec, DictConfig):
        spec = server_spec(spec)
    if spec.resume:
        run_dir = Path(spec.resume).expanduser().resolve()
        return run_dir if run_dir.is_dir() else run_dir.parent
    stamp = time.strftime("%Y%m%d-%H%M%S")
    data, model = spec.run.data, spec.run.model
    name = f"{spec.method.name}-{data.dataset}-{model.name}-s{spec.seed}-{stamp}"
    root = Path(spec.output_dir).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    run_dir, n = root / name, 1
    while True:
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            n += 1
            run_dir = root / f"{name}-{n}"


def run_profl(grid: Grid, run_config: dict, deadline: float | None = None) -> dict:
    """The whole run on any Grid; returns the summary written to results.json.

    ``deadline`` (``time.monotonic()`` seconds) time-boxes it: no round starts after it.
    The composed configuration is read once, into a :class:`ServerSpec`.
    """
    spec = server_spec(compose_config(run_config))
    sources = key_sources(run_config)
    for line in source_lines(sources, str(run_config.get("preset", "") or "")):
        log(INFO, line)
    run = spec.run
    evaluator = held_out_evaluator(spec)
    config_hash = fingerprint(spec.config)
    resume = spec.resume_path()
    resumed = checkpoint.load(resume, config_hash) if resume is not None else None
    strategy = build_strategy(spec)
    log(INFO, "estimated peak MB, full-model training %.2f; %s", run.full_peak_mb,
        strategy.memory_summary())  # fmt: skip
    run_dir = run_dir_of(spec)
    keys = {s.key: {"value": s.value, "from": s.source} for s in sources}
    recorder = RunRecorder(run_dir, spec.config, spec.num_rounds, keys)
    if resumed is not None:
        strategy.load_state_dict(resumed)
        recorder.data["rounds"] = list(strategy.history)
        log(INFO, "resumed %s at round %d", run_dir, strategy.server_round)

    def on_round(rec: dict) -> None:
        recorder.round(rec)
        every = spec.checkpoint_every
        if every and (strategy.server_round % every == 0 or strategy.schedule.done):
            checkpoint.save(run_dir / "checkpoint.pt", strategy.state_dict(), config_hash)

    strategy.on_round, strategy.deadline = on_round, deadline
    result = strategy.start(
        grid, num_rounds=spec.num_rounds, timeout=spec.rounds.timeout, evaluate_fn=evaluator
    )
    final = evaluator(-1, strategy.deliverable())
    summary = summarize(strategy, result, final, run, spec.seed) | {"run_dir": str(run_dir)}
    if strategy.tail is not None:  # the last round's model too, to show what averaging gave
        last = evaluator(-1, strategy.final_model())
        summary["final_accuracy_last_round"] = last["accuracy"]
        summary["final_average_rounds"] = len(strategy.tail.states)
    recorder.finish(summary, strategy.budgets)
    return summary


def summarize(
    strategy: Engine, result: Result, final: dict[str, float], run: RunSpec, seed: int
) -> dict:
    """``results.json``'s summary: final scores, what happened, and the method's memory.

    ``val_accuracy`` and ``val_loss`` are the delivered model's on the whole validation
    split (None without one): what a choice between settings reads.
    """
    history, memory = strategy.history, strategy.memory_summary()
    worst = float(memory["worst_peak_mb_est"] or run.full_peak_mb)
    return {
        "final_accuracy": final["accuracy"],
        "final_loss": final["loss"],
        "val_accuracy": final.get("val_accuracy"),
        "val_loss": final.get("val_loss"),
        "seed": seed,
        "rounds": strategy.server_round,
        "schedule_done": strategy.schedule.done,
        "stopped": strategy.stopped,  # why the run stopped early (no usable replies), or None
        "refusals": strategy.refusals,
        "failed_replies": sum(r.get("failed", 0) for r in history),
        "rejected_replies": sum(r.get("rejected", 0) for r in history),
        # Rounds that sent orders but merged nothing: missing from the Result's training
        # metrics (this session) and without a training loss in the log (before a resume).
        "rounds_without_update": sum(
            1
            for r in history
            if r.get("selected")
            and "train_loss" not in r
            and r["round"] not in result.train_metrics_clientapp
        ),
        "full_model_peak_mb_est": round(run.full_peak_mb, 2),
        "worst_peak_mb_est": round(worst, 2),
        "peak_reduction": round(1 - worst / run.full_peak_mb, 4),
        **memory,
        "budgets_mb": sorted(round(b, 2) for b in strategy.budgets.values()),
        "transitions": [
            r["transition"] | {"round": r["round"], "step": f"s{r['stage']}b{r['block']}"}
            for r in history
            if "transition" in r
        ],
    }
