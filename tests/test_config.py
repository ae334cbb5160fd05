"""Configuration: presets compose, bad keys and values stop the run with a clear message."""

import pytest

from profl_strategy.config import ConfigError, compose_config


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
        ({"min-rounds-per-step": 9, "max-rounds-stage1": 3}, "max-rounds-stage1"),
        ({"overrides": "train.nope=1"}, "train.nope"),
        ({"plans": "cheap"}, "'plans'"),
        ({"plans": "exact", "method": "fedavg"}, "'plans'"),
        ({"plans": "exact", "plans-min-micro-batch": 64}, "'plans-min-micro-batch'"),
    ],
)
def test_bad_values_name_the_key(run_config: dict, names: str) -> None:
    with pytest.raises(ConfigError, match=names.replace("(", r"\(")):
        compose_config(run_config)
