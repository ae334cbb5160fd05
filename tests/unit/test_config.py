"""Configuration: presets compose, bad keys and values stop the run with a clear message."""

import re

import pytest

from profl_strategy.engine.errors import ConfigError
from profl_strategy.run.config import CONF_DIR, compose_config
from profl_strategy.run.factory import model_key


def test_default_preset_composes() -> None:
    cfg = compose_config({"preset": "laptop"})
    assert cfg.model.name == "cnn" and cfg.dataset.name == "fmnist"
    assert cfg.memory.name == "fedrolex-skewed"


def test_typed_keys_override_the_preset() -> None:
    cfg = compose_config(
        {
            "preset": "laptop",
            "lr": 0.2,
            "model": "resnet18",
            "width": 0.5,
            "overrides": "train.momentum=0.5",
        }
    )
    assert (cfg.train.lr, cfg.model.name, cfg.model.width, cfg.train.momentum) == (
        0.2,
        "resnet18",
        0.5,
        0.5,
    )


@pytest.mark.parametrize(
    ("run_config", "names"),
    [
        ({"nosuchkey": 1}, "nosuchkey"),
        ({"model": "resnet99"}, "resnet99"),
        ({"preset": "huge"}, "huge"),
        ({"lr": -1.0}, "'lr'"),
        ({"lr": "fast"}, "'lr'"),
        ({"batch-size": 0}, "'batch-size'"),
        ({"fraction-train": 1.5}, "'fraction-train'"),
        ({"partitioner": "random"}, "'partitioner'"),
        ({"data-dir": "/no/such/folder"}, "'data-dir'"),
        ({"em-threshold": 1.5}, "'em-threshold'"),
        ({"em-min-share": 1.0}, "'em-min-share'"),
        ({"min-rounds-per-step": 9, "max-rounds-stage1": 3}, "max-rounds-stage1"),
        ({"overrides": "train.nope=1"}, "train.nope"),
        ({"plans": "cheap"}, "'plans'"),
        ({"eval-test-size": -1}, "'eval-test-size'"),
        (
            {"val-fraction": 0.5},
            "'val-fraction' (data.val_fraction) = 0.5 is invalid: it must be a number in [0, 0.5)",
        ),
        ({"val-fraction": -0.1}, "'val-fraction'"),
        ({"val-fraction": "much"}, "'val-fraction'"),
        ({"final-average": -2}, "'final-average'"),
        ({"em-stop": "sometimes"}, "'em-stop'"),
        ({"plans": "exact", "method": "fedavg"}, "'plans'"),
        ({"plans": "exact", "plans-min-micro-batch": 64}, "'plans-min-micro-batch'"),
    ],
)
def test_bad_values_name_the_key(run_config: dict, names: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(names)):
        compose_config(run_config)


PRESETS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes(preset: str) -> None:
    cfg = compose_config({"preset": preset})
    assert cfg.num_rounds >= 1 and 0 < cfg.data.subsample <= 1


@pytest.mark.parametrize("preset", ["cifar10_cpu", "cifar10_cpu_long", "fmnist_cpu"])
def test_comparison_presets_fit_profls_schedule_in_their_rounds(preset: str) -> None:
    # The comparison gives every method the same rounds: ProFL's capped steps must fit them.
    cfg = compose_config({"preset": preset})
    m = cfg.method
    blocks = model_key(cfg).spec().num_blocks
    assert blocks * (m.max_rounds_stage1 + m.max_rounds_stage2) <= cfg.num_rounds
