"""Compose a run's configuration from ``conf/`` and the keys a user typed.

``[tool.flwr.app.config]`` lists the keys a user types (``flwr run . --run-config
"lr=0.1"``). An empty string there means "whatever the preset says", so the
defaults live in one place: the YAML files under ``conf/``. Each typed key maps
to one Hydra override; ``overrides`` passes any other Hydra override through.
Everything is validated before training starts, against the declaration of every
key in :mod:`profl_strategy.run.config_keys`; :func:`key_sources` says where each
key's value came from.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from profl_strategy.engine.errors import ConfigError
from profl_strategy.run.config_keys import (
    CHECKED,
    KEYS,
    META_KEYS,
    RUN_CONFIG_KEYS,
    Key,
    group_options,
    label_of,
)


def _find_conf_dir() -> Path:
    """The YAML tree under ``conf/``: the one place that decides where it lives.

    A wheel carries it inside the package (``profl_strategy/_conf``, see
    ``[tool.hatch.build.targets.wheel.force-include]``); a checkout or a FAB has it beside
    the package (``conf/``). The packaged copy wins, so an installed wheel never reads a
    stray ``conf/`` folder that happens to sit in ``site-packages``.
    """
    package = Path(__file__).resolve().parents[1]  # profl_strategy/
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


def _options(group: str) -> list[str]:
    return group_options(CONF_DIR, group)


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
    for key in CHECKED:
        value = OmegaConf.select(cfg, key.path, default=key.if_missing)
        if key.kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if (
            not isinstance(value, key.kind)
            or (isinstance(value, bool) and key.kind is not bool)
            or not key.check(value)
        ):
            raise ConfigError(f"{key.label} = {value!r} is invalid: it must be {key.allowed}")
    if cfg.train.min_replies > cfg.train.min_nodes:
        raise ConfigError(
            f"'min-replies' = {cfg.train.min_replies} exceeds 'min-train-nodes' = "
            f"{cfg.train.min_nodes}: a round could never gather enough replies"
        )
    m = cfg.method
    plans = OmegaConf.select(cfg, "method.plans", default="off")
    if plans != "off" and m.full_model:
        raise ConfigError(
            f"'plans' = {plans!r} applies to ProFL's block steps only; method "
            f"'{m.name}' trains whole models: use plans='off' or method='profl'"
        )
    mb = OmegaConf.select(cfg, "method.plans_min_micro_batch", default=4)
    if mb > cfg.train.batch_size:
        raise ConfigError(
            f"'plans-min-micro-batch' = {mb!r} is invalid: it must be an integer in "
            f"[1, batch-size = {cfg.train.batch_size}]"
        )
    for cap in ("max_rounds_stage1", "max_rounds_stage2"):
        if m[cap] < m.min_rounds_per_step:
            raise ConfigError(
                f"{label_of('method.' + cap)} = {m[cap]} is below "
                f"'min-rounds-per-step' = {m.min_rounds_per_step}; raise it or lower the minimum"
            )


# ---- where each key's value came from ---------------------------------------------------
@dataclass(frozen=True)
class KeySource:
    """A run-config key's effective value and the layer that set it.

    ``source`` is ``typed`` (the run config: the key itself or ``overrides``), ``preset``
    (``conf/experiment/<preset>.yaml`` sets it, or changes it by picking another group
    file) or ``default`` (``conf/config.yaml`` and the group files).
    """

    key: str
    value: Any
    source: str


def key_sources(run_config: dict[str, Any] | None = None) -> list[KeySource]:
    """Every key's value and source, by composing without, with the preset, and with all.

    Call it on a run config :func:`compose_config` accepted. Three more compositions
    (a fraction of a second) tell the layers apart: a value is the preset's where the
    preset composition differs from the bare one or the preset file names the path.
    """
    run_config = dict(run_config or {})
    preset = str(run_config.get("preset", "") or "")
    preset_overrides = [f"+experiment={preset}"] if preset else []
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        layers = [
            compose(config_name="config", overrides=o, return_hydra_config=True)
            for o in ([], preset_overrides, to_overrides(run_config))
        ]
    bare, with_preset, full = layers
    in_preset = OmegaConf.load(CONF_DIR / "experiment" / f"{preset}.yaml") if preset else None
    typed = _typed_targets(run_config)
    out = []
    for key in KEYS:
        if key.name in META_KEYS:
            continue
        value = _value(full, key)
        if key.name in typed or key.group in typed or key.path in typed:
            source = "typed"
        elif _value(with_preset, key) != _value(bare, key) or _names(in_preset, key):  # type: ignore[arg-type]
            source = "preset"
        else:
            source = "default"
        out.append(KeySource(key.name, value, source))
    return out


def source_lines(sources: list[KeySource], preset: str = "") -> list[str]:
    """Log lines: the keys grouped by source, each ``key=value``."""
    titles = {
        "typed": "config keys typed",
        "preset": f"config keys from preset '{preset}'",
        "default": "config keys at their defaults (conf/config.yaml, conf/<group>/)",
    }
    lines = []
    for source, title in titles.items():
        entries = [f"{s.key}={_show(s.value)}" for s in sources if s.source == source]
        if entries:
            lines.append(f"{title}: " + " ".join(entries))
    return lines


def _show(value: Any) -> str:
    return "''" if value == "" else str(value).lower() if isinstance(value, bool) else str(value)


def _value(cfg: DictConfig, key: Key) -> Any:
    if key.group:
        return cfg.hydra.runtime.choices[key.group]
    return OmegaConf.select(cfg, key.path, default=key.if_missing)


def _names(preset_file: DictConfig | None, key: Key) -> bool:
    """Whether the preset file sets ``key`` (a ``group:`` key: in its defaults list)."""
    if preset_file is None:
        return False
    if key.group:
        defaults = OmegaConf.select(preset_file, "defaults", default=[]) or []
        return any(f"override /{key.group}" in dict(d) for d in defaults if not isinstance(d, str))
    return OmegaConf.select(preset_file, key.path) is not None


def _typed_targets(run_config: dict[str, Any]) -> set[str]:
    """Keys typed in the run config, and the paths and groups ``overrides`` sets."""
    typed = {k for k, v in run_config.items() if k not in META_KEYS and v != ""}
    for override in shlex.split(str(run_config.get("overrides", "") or "")):
        typed.add(override.split("=", 1)[0].lstrip("+~").removeprefix("/"))
    return typed
