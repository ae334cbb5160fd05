"""Compose a run's configuration from ``conf/`` and the keys a user typed.

``[tool.flwr.app.config]`` lists the keys a user types (``flwr run . --run-config
"lr=0.1"``). An empty string there means "whatever the preset says", so the
defaults live in one place: the YAML files under ``conf/``. Each typed key maps
to one Hydra override; ``overrides`` passes any other Hydra override through.
Everything is validated before training starts.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from profl_strategy.movement import NORMS, VARIANTS
from profl_strategy.plans import PLAN_MODES
from profl_strategy.schedule import EM_STOPS
from profl_strategy.step_model import CONDENSE_MODES, STAGE1_PREFIXES


def _find_conf_dir() -> Path:
    """The YAML tree under ``conf/``: the one place that decides where it lives.

    A wheel carries it inside the package (``profl_strategy/_conf``, see
    ``[tool.hatch.build.targets.wheel.force-include]``); a checkout or a FAB has it beside
    the package (``conf/``). The packaged copy wins, so an installed wheel never reads a
    stray ``conf/`` folder that happens to sit in ``site-packages``.
    """
    package = Path(__file__).resolve().parent
    candidates = (package / "_conf", package.parent / "conf")
    for candidate in candidates:
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(
        "ProFL's configuration files (config.yaml and its groups) were not found in "
        + " or ".join(str(c) for c in candidates)
        + "; install the app with `pip install .` from a checkout, or run it from one"
    )


CONF_DIR = _find_conf_dir()
SHARE_BY = ("equal", "params", "sqrt-params")  # method.share_by

# run-config key -> Hydra path ("group" keys pick a file of a conf/ group).
RUN_CONFIG_KEYS: dict[str, str] = {
    "model": "group:model",
    "dataset": "group:dataset",
    "memory-profile": "group:memory",
    "method": "group:method",
    "width": "model.width",
    "data-dir": "data.data_dir",
    "partitioner": "data.partitioner",
    "dirichlet-alpha": "data.alpha",
    "data-subsample": "data.subsample",
    "num-server-rounds": "num_rounds",
    "seed": "seed",
    "batch-size": "train.batch_size",
    "local-epochs": "train.local_epochs",
    "lr": "train.lr",
    "fraction-train": "train.fraction",
    "min-train-nodes": "train.min_nodes",
    "round-timeout": "train.timeout",
    "memory-scale": "memory.scale",
    "em-window": "method.em.window",
    "em-threshold": "method.em.threshold",
    "em-patience": "method.em.patience",
    "em-variant": "method.em.variant",
    "em-norm": "method.em.norm",
    "em-sample": "method.em.sample",
    "em-end-last": "method.em.end_last",
    "em-stop": "method.em.stop",
    "em-min-share": "method.em.min_share",
    "min-rounds-per-step": "method.min_rounds_per_step",
    "max-rounds-stage1": "method.max_rounds_stage1",
    "max-rounds-stage2": "method.max_rounds_stage2",
    "share-rounds": "method.share_rounds",
    "share-by": "method.share_by",
    "proximal-mu": "method.proximal_mu",
    "plans": "method.plans",
    "plans-min-micro-batch": "method.plans_min_micro_batch",
    "eval-every": "eval.every",
    "eval-test-size": "eval.test_size",
    "final-average": "eval.final_average",
    "outputs-dir": "output.dir",
    "min-replies": "train.min_replies",
    "channels-last": "train.channels_last",
    "checkpoint-every": "checkpoint.every",
    "resume": "resume",
}
META_KEYS = ("preset", "overrides")

# Hydra path -> (type, check, what is allowed)
_CHECKS: dict[str, tuple[type, Any, str]] = {
    "seed": (int, lambda v: v >= 0, "an integer >= 0"),
    "num_rounds": (int, lambda v: v >= 1, "an integer >= 1"),
    "model.width": (float, lambda v: 0 < v <= 4, "a number in (0, 4]"),
    "train.batch_size": (int, lambda v: v >= 1, "an integer >= 1"),
    "train.local_epochs": (int, lambda v: v >= 1, "an integer >= 1"),
    "train.lr": (float, lambda v: 0 < v < 10, "a number in (0, 10)"),
    "train.momentum": (float, lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "train.weight_decay": (float, lambda v: v >= 0, "a number >= 0"),
    "train.fraction": (float, lambda v: 0 < v <= 1, "a number in (0, 1]"),
    "train.min_nodes": (int, lambda v: v >= 1, "an integer >= 1"),
    "train.timeout": (float, lambda v: v > 0, "a number of seconds > 0"),
    "data.partitioner": (
        str,
        lambda v: v in ("iid", "dirichlet", "shards"),
        "iid, dirichlet or shards",
    ),
    "data.alpha": (float, lambda v: v > 0, "a number > 0"),
    "data.shards_per_partition": (int, lambda v: v >= 1, "an integer >= 1"),
    "data.subsample": (float, lambda v: 0 < v <= 1, "a number in (0, 1]"),
    "data.data_dir": (
        str,
        lambda v: not v or Path(v).expanduser().is_dir(),
        "an existing folder, or '' for the hub",
    ),
    "memory.scale": (float, lambda v: v > 0, "a number > 0"),
    "method.min_rounds_per_step": (int, lambda v: v >= 1, "an integer >= 1"),
    "method.max_rounds_stage1": (int, lambda v: v >= 1, "an integer >= 1"),
    "method.max_rounds_stage2": (int, lambda v: v >= 1, "an integer >= 1"),
    "method.share_rounds": (bool, lambda v: True, "true or false"),
    "method.share_by": (str, lambda v: v in SHARE_BY, "one of " + ", ".join(SHARE_BY)),
    "method.proximal_mu": (float, lambda v: v >= 0, "a number >= 0"),
    "method.em.window": (int, lambda v: v >= 2, "an integer >= 2"),
    "method.em.threshold": (float, lambda v: 0 < v < 1, "a number in (0, 1)"),
    "method.em.patience": (int, lambda v: v >= 1, "an integer >= 1"),
    "method.em.variant": (str, lambda v: v in VARIANTS, "one of " + ", ".join(VARIANTS)),
    "method.em.norm": (str, lambda v: v in NORMS, "one of " + ", ".join(NORMS)),
    "method.em.sample": (int, lambda v: v >= 0, "an integer >= 0 (0: every parameter)"),
    "method.em.record": (bool, lambda v: True, "true or false"),
    "method.em.end_last": (bool, lambda v: True, "true or false"),
    "method.em.stop": (str, lambda v: v in EM_STOPS, "one of " + ", ".join(EM_STOPS)),
    "method.em.min_share": (float, lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "method.stage1_prefix": (
        str,
        lambda v: v in STAGE1_PREFIXES,
        "one of " + ", ".join(STAGE1_PREFIXES),
    ),
    "method.condense": (str, lambda v: v in CONDENSE_MODES, "one of " + ", ".join(CONDENSE_MODES)),
    "method.condense_rounds": (int, lambda v: v >= 1, "an integer >= 1"),
    "eval.every": (int, lambda v: v >= 1, "an integer >= 1"),
    "eval.test_size": (int, lambda v: v >= 0, "an integer >= 0 (0: the whole test split)"),
    "eval.final_average": (int, lambda v: v >= 0, "an integer >= 0 (0: the last round's model)"),
    "train.min_replies": (int, lambda v: v >= 1, "an integer >= 1"),
    "train.channels_last": (bool, lambda v: True, "true or false"),
    "checkpoint.every": (int, lambda v: v >= 0, "an integer >= 0 (0: no checkpoints)"),
    "resume": (
        str,
        lambda v: not v or Path(v).expanduser().exists(),
        "an existing run folder or checkpoint file, or ''",
    ),
}


class ConfigError(ValueError):
    """A configuration key has a value the app cannot run with."""


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def _run_key_for(path: str) -> str:
    names = [k for k, v in RUN_CONFIG_KEYS.items() if v == path]
    return f"'{names[0]}' ({path})" if names else f"'{path}'"


def to_overrides(run_config: dict[str, Any]) -> list[str]:
    """Turn typed run-config keys into Hydra overrides; unknown keys are errors."""
    overrides: list[str] = []
    preset = str(run_config.get("preset", "") or "")
    if preset:
        if preset not in _options("experiment"):
            raise ConfigError(
                f"preset '{preset}' does not exist; allowed: {', '.join(_options('experiment'))}"
            )
        overrides.append(f"+experiment={preset}")
    for key, value in run_config.items():
        if key in META_KEYS or value == "":
            continue
        if key not in RUN_CONFIG_KEYS:
            raise ConfigError(
                f"unknown config key '{key}'; allowed: {', '.join(sorted(RUN_CONFIG_KEYS))}"
            )
        target = RUN_CONFIG_KEYS[key]
        if target.startswith("group:"):
            group = target.split(":", 1)[1]
            if str(value) not in _options(group):
                raise ConfigError(
                    f"{key}='{value}' is not available; allowed: {', '.join(_options(group))}"
                )
            overrides.append(f"{group}={value}")
        else:
            # ++: set even where the method group lacks the key (validate() then
            # names the key, e.g. plans on a full-model baseline)
            overrides.append(f"++{target}={_quote(value)}")
    overrides += shlex.split(str(run_config.get("overrides", "") or ""))
    return overrides


def _quote(value: Any) -> str:
    if isinstance(value, str):
        return "'" + value.replace("'", "\\'") + "'"
    return str(value)


def compose_config(run_config: dict[str, Any] | None = None) -> DictConfig:
    """The validated configuration of a run."""
    overrides = to_overrides(dict(run_config or {}))
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            cfg = compose(config_name="config", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(
            f"invalid configuration override ({err}); overrides were {overrides}"
        ) from err
    validate(cfg)
    return cfg


def validate(cfg: DictConfig) -> None:
    """Check types, ranges and combinations; raise ConfigError naming the key."""
    for path, (kind, ok, allowed) in _CHECKS.items():
        value = OmegaConf.select(cfg, path)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if (
            not isinstance(value, kind)
            or (isinstance(value, bool) and kind is not bool)
            or not ok(value)
        ):
            raise ConfigError(f"{_run_key_for(path)} = {value!r} is invalid: it must be {allowed}")
    if cfg.train.min_replies > cfg.train.min_nodes:
        raise ConfigError(
            f"'min-replies' = {cfg.train.min_replies} exceeds 'min-train-nodes' = "
            f"{cfg.train.min_nodes}: a round could never gather enough replies"
        )
    m = cfg.method
    plans = OmegaConf.select(cfg, "method.plans", default="off")
    if plans not in PLAN_MODES:
        raise ConfigError(
            f"'plans' = {plans!r} is invalid: it must be one of {', '.join(PLAN_MODES)}"
        )
    if plans != "off" and m.full_model:
        raise ConfigError(
            f"'plans' = {plans!r} applies to ProFL's block steps only; method "
            f"'{m.name}' trains whole models: use plans='off' or method='profl'"
        )
    mb = OmegaConf.select(cfg, "method.plans_min_micro_batch", default=4)
    if not isinstance(mb, int) or isinstance(mb, bool) or not 1 <= mb <= cfg.train.batch_size:
        raise ConfigError(
            f"'plans-min-micro-batch' = {mb!r} is invalid: it must be an integer in "
            f"[1, batch-size = {cfg.train.batch_size}]"
        )
    for cap in ("max_rounds_stage1", "max_rounds_stage2"):
        if m[cap] < m.min_rounds_per_step:
            raise ConfigError(
                f"{_run_key_for('method.' + cap)} = {m[cap]} is below "
                f"'min-rounds-per-step' = {m.min_rounds_per_step}; raise it or lower the minimum"
            )
