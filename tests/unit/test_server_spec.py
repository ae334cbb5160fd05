"""The composed configuration is read once, into ServerSpec; each method is built from it
explicitly (no matching of arguments against a class's signature)."""

import pytest
from omegaconf import OmegaConf

from profl_strategy.engine.checkpoint import fingerprint
from profl_strategy.engine.fixed_schedule import FixedSchedule
from profl_strategy.engine.step import STAGE_FULL, Step
from profl_strategy.methods.profl.movement import ConvergenceDetector
from profl_strategy.methods.profl.schedule import ProgressiveSchedule
from profl_strategy.methods.profl.strategy import ProFL
from profl_strategy.run.config import compose_config
from profl_strategy.run.factory import build_strategy, server_spec
from tests.support.strategies import query_run

METHODS = ("profl", "profl_fedprox", "fedavg", "exclusive", "allsmall", "heterofl",
           "fedrolex", "depthfl", "inclusivefl")  # fmt: skip


def test_spec_reads_the_config() -> None:
    cfg = compose_config({"preset": "fmnist_cpu", "em-window": 5, "eval-test-size": 100})
    spec = server_spec(cfg)
    assert (spec.num_rounds, spec.seed, spec.eval.every, spec.eval.test_size) == (30, 0, 2, 100)
    assert (spec.schedule.max_rounds_stage1, spec.schedule.max_rounds_stage2) == (3, 4)
    assert (spec.em.window, spec.em.threshold, spec.em.variant) == (5, 0.2, "denoised")
    assert (spec.rounds.fraction, spec.rounds.min_nodes, spec.rounds.timeout) == (0.2, 2, 600.0)
    assert spec.run.data.subsample == 0.25 and spec.method.options["plans"] == "exact"
    # checkpoints written before ServerSpec carry this hash: they must still resume
    assert fingerprint(spec.config) == fingerprint(OmegaConf.to_container(cfg, resolve=True))


@pytest.mark.parametrize("method", METHODS)
def test_each_method_is_built_with_its_settings(method: str) -> None:
    spec = server_spec(compose_config({"preset": "laptop", "method": method, "width": 0.25}))
    strategy = build_strategy(spec)
    assert type(strategy).__module__ + "." + type(strategy).__name__ == spec.method.strategy
    assert (strategy.seed, strategy.min_replies, strategy.eval_every) == (0, 1, 1)
    assert strategy.memory_aware == spec.method.memory_aware
    if isinstance(strategy, ProFL):  # only ProFL's methods stop steps on effective movement
        assert type(strategy).takes_detector and strategy.detector.window == spec.em.window
        assert isinstance(strategy.schedule, ProgressiveSchedule)
    else:
        assert not type(strategy).takes_detector and not hasattr(strategy, "detector")
        # a whole-model method: one full-model step for the run's rounds
        last = spec.run.model.spec().num_blocks - 1
        assert isinstance(strategy.schedule, FixedSchedule)
        assert strategy.schedule.steps == [Step(STAGE_FULL, last)]
        assert strategy.schedule.max_rounds() == spec.num_rounds


def test_profl_refuses_a_whole_model_schedule() -> None:
    run = query_run()
    schedule = FixedSchedule(Step(STAGE_FULL, run.model.spec().num_blocks - 1), 3)
    with pytest.raises(ValueError, match="full_model: false"):
        ProFL(run=run, schedule=schedule, detector=ConvergenceDetector(2, 0.5, 1),
              fraction_train=1.0, min_train_nodes=1, seed=0)  # fmt: skip
