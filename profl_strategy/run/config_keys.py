"""The run-config keys a user types, declared once.

Each :class:`Key` says what a user may type (``flwr run . --run-config "lr=0.1"``): its
name, the Hydra path it sets, its type, what values are allowed and why one would set
it. The validation (:mod:`profl_strategy.run.config`), the key -> Hydra path map
(:data:`RUN_CONFIG_KEYS`), the ``[tool.flwr.app.config]`` block of ``pyproject.toml``
and the README's key table all come from :data:`KEYS`. Flower reads ``pyproject.toml``
before any of this code runs, so that block cannot be generated at run time: it is
printed here (``python -m profl_strategy.run.config_keys --pyproject``) and
``tests/unit/test_config_keys.py`` fails when the file drifts from it.

Every key is ``""`` in ``pyproject.toml`` except ``preset``: empty means "what the preset
says", so a preset (``conf/experiment/``) can supply any key and the defaults live in
one place, the YAML files under ``conf/``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from profl_strategy.memory.plans import PLAN_MODES
from profl_strategy.methods.profl.movement import NORMS, VARIANTS
from profl_strategy.methods.profl.schedule import EM_STOPS
from profl_strategy.methods.profl.step_model import CONDENSE_MODES, STAGE1_PREFIXES

SHARE_BY = ("equal", "params", "sqrt-params")  # method.share_by
PARTITIONERS = ("iid", "dirichlet", "shards")
GROUP, META = "group:", "meta:"  # path prefixes: a file of a conf/ group; not a Hydra path


def _anything(value: Any) -> bool:  # noqa: ARG001 - a bool needs its type only
    return True


def _one_of(options: tuple[str, ...]) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v in options), "one of " + ", ".join(options)


@dataclass(frozen=True)
class Key:
    """One setting: the run-config key a user types and the Hydra path it sets.

    Parameters
    ----------
    name : str
        The run-config key (kebab case); ``""`` for a Hydra path that only
        ``overrides`` reaches but that is validated all the same.
    path : str
        The Hydra path, ``group:<group>`` for a key that picks a file of
        ``conf/<group>/``, or ``meta:`` for ``preset`` and ``overrides``.
    kind : type
        The type the composed value must have (an int passes for a float).
    check : callable
        Whether a value of that type is allowed.
    allowed : str
        What is allowed, in words: the end of the error message.
    help : str
        Why one would set it: the comment in ``pyproject.toml`` and the README.
    default : str
        Its value in ``pyproject.toml``; ``""`` for all but ``preset``.
    if_missing : Any
        The value a method whose config group lacks the path runs with; None:
        the path must be there.
    """

    name: str
    path: str
    kind: type = str
    check: Callable[[Any], bool] = _anything
    allowed: str = ""
    help: str = ""
    default: str = ""
    if_missing: Any = None

    @property
    def group(self) -> str:
        """The ``conf/`` group a ``group:`` key picks a file of (``""`` otherwise)."""
        return self.path.removeprefix(GROUP) if self.path.startswith(GROUP) else ""

    @property
    def label(self) -> str:
        """How error messages name it: ``'lr' (train.lr)``, or the bare path."""
        return f"'{self.name}' ({self.path})" if self.name else f"'{self.path}'"


def _k(
    name: str,
    path: str,
    kind: type,
    rule: tuple[Callable[[Any], bool], str],
    help: str = "",  # noqa: A002 - the field's name
    **more: Any,
) -> Key:
    return Key(name, path, kind, rule[0], rule[1], help, **more)


INT_GE1 = (lambda v: v >= 1), "an integer >= 1"
BOOL = _anything, "true or false"

# The keys a user types, in the order of pyproject.toml's [tool.flwr.app.config].
KEYS: tuple[Key, ...] = (
    Key("preset", META + "experiment", help="conf/experiment/<preset>.yaml", default="quickstart"),
    Key("overrides", META, help="any other Hydra override, "
        'e.g. "train.momentum=0.0 eval.batch_size=256"'),
    _k("resume", "resume", str, ((lambda v: not v or Path(v).expanduser().exists()),
       "an existing run folder or checkpoint file, or ''"),
       "a run folder (or its checkpoint.pt) to continue after a crash"),
    _k("checkpoint-every", "checkpoint.every", int,
       ((lambda v: v >= 0), "an integer >= 0 (0: no checkpoints)"),
       "save the whole state every N rounds (0: never)"),
    _k("min-replies", "train.min_replies", int, INT_GE1,
       "usable replies a round needs to update the model"),
    Key("model", GROUP + "model", help="architecture"),
    _k("width", "model.width", float, ((lambda v: 0 < v <= 4), "a number in (0, 4]"),
       "channel width multiplier"),
    Key("dataset", GROUP + "dataset", help="dataset"),
    _k("data-dir", "data.data_dir", str, ((lambda v: not v or Path(v).expanduser().is_dir()),
       "an existing folder, or '' for the hub"),
       "local data root (e.g. ../shared/data); empty: Hugging Face hub"),
    _k("partitioner", "data.partitioner", str,
       ((lambda v: v in PARTITIONERS), "iid, dirichlet or shards"),
       " | ".join(PARTITIONERS)),
    _k("dirichlet-alpha", "data.alpha", float, ((lambda v: v > 0), "a number > 0"),
       "Dirichlet concentration: smaller, more skewed partitions"),
    _k("data-subsample", "data.subsample", float, ((lambda v: 0 < v <= 1), "a number in (0, 1]"),
       "share of its partition each node trains on, in (0, 1]"),
    _k("val-fraction", "data.val_fraction", float,
       ((lambda v: 0 <= v < 0.5), "a number in [0, 0.5) (0: no validation split)"),
       "seeded share of the training split the server holds out to choose settings on"),
    Key("memory-profile", GROUP + "memory", help="simulated memory budgets"),
    _k("memory-scale", "memory.scale", float, ((lambda v: v > 0), "a number > 0"),
       "multiply every simulated budget"),
    Key("method", GROUP + "method", help="method"),
    _k("num-server-rounds", "num_rounds", int, INT_GE1,
       "hard cap; the schedule normally ends first"),
    _k("seed", "seed", int, ((lambda v: v >= 0), "an integer >= 0"),
       "seeds partitions, budgets, sampling and the initial model"),
    _k("batch-size", "train.batch_size", int, INT_GE1, "local batch size"),
    _k("local-epochs", "train.local_epochs", int, INT_GE1, "local epochs a round"),
    _k("lr", "train.lr", float, ((lambda v: 0 < v < 10), "a number in (0, 10)"),
       "local SGD learning rate"),
    _k("fraction-train", "train.fraction", float, ((lambda v: 0 < v <= 1), "a number in (0, 1]"),
       "share of eligible nodes selected per round"),
    _k("min-train-nodes", "train.min_nodes", int, INT_GE1,
       "fewer eligible nodes than this: train with all of them"),
    _k("round-timeout", "train.timeout", float, ((lambda v: v > 0), "a number of seconds > 0"),
       "seconds a round waits for replies"),
    _k("em-window", "method.em.window", int, ((lambda v: v >= 2), "an integer >= 2"),
       "rounds in the effective-movement window"),
    _k("em-threshold", "method.em.threshold", float, ((lambda v: 0 < v < 1), "a number in (0, 1)"),
       "a step converges when EM stays below this ..."),
    _k("em-patience", "method.em.patience", int, INT_GE1, "... for this many rounds"),
    _k("em-variant", "method.em.variant", str, _one_of(VARIANTS),
       " | ".join(VARIANTS) + " (effective movement, README)"),
    _k("em-norm", "method.em.norm", str, _one_of(tuple(NORMS)),
       " | ".join(NORMS) + " (vector and scalar variants)"),
    _k("em-stop", "method.em.stop", str, _one_of(EM_STOPS),
       " | ".join(EM_STOPS) + ": may EM end a stage-2 step that has a share of the budget"),
    _k("em-min-share", "method.em.min_share", float,
       ((lambda v: 0 <= v < 1), "a number in [0, 1)"),
       "EM may end a step only after this share of its cap (0: any round)"),
    _k("em-end-last", "method.em.end_last", bool, BOOL,
       "true: EM may end the last step too (fixed caps only, the paper's stop)"),
    _k("em-sample", "method.em.sample", int,
       ((lambda v: v >= 0), "an integer >= 0 (0: every parameter)"),
       "EM on a fixed random sample of this many parameters (0: all)"),
    _k("min-rounds-per-step", "method.min_rounds_per_step", int, INT_GE1,
       "no step ends before this many rounds"),
    _k("max-rounds-stage1", "method.max_rounds_stage1", int, INT_GE1,
       "round cap of a stage-1 step"),
    _k("max-rounds-stage2", "method.max_rounds_stage2", int, INT_GE1,
       "round cap of a stage-2 step (with share-rounds false)"),
    _k("share-rounds", "method.share_rounds", bool, BOOL,
       "true: stage 2 shares the rounds left up to num-server-rounds"),
    _k("share-by", "method.share_by", str, _one_of(SHARE_BY),
       " | ".join(SHARE_BY) + ": how stage 2 weights the shares"),
    _k("proximal-mu", "method.proximal_mu", float, ((lambda v: v >= 0), "a number >= 0"),
       "> 0: ProFL + FedProx"),
    _k("plans", "method.plans", str, _one_of(PLAN_MODES),
       " | ".join(PLAN_MODES) + ": per-node training plans that fit small budgets",
       if_missing="off"),
    _k("plans-min-micro-batch", "method.plans_min_micro_batch", int,
       ((lambda v: v >= 1), "an integer in [1, batch-size]"),
       "smallest micro-batch a plan may use", if_missing=4),
    _k("eval-every", "eval.every", int, INT_GE1,
       "score the global model every N rounds (and the last)"),
    _k("eval-test-size", "eval.test_size", int,
       ((lambda v: v >= 0), "an integer >= 0 (0: the whole test split)"),
       "> 0: score rounds on fixed subsets of N test and N validation images (final: all)"),
    _k("final-average", "eval.final_average", int,
       ((lambda v: v >= 0), "an integer >= 0 (0: the last round's model)"),
       "> 0: deliver the mean of the last N rounds' models (0: the last round's)"),
    _k("outputs-dir", "output.dir", str, (_anything, "a folder"),
       "run folders go here (relative: to the SuperLink's working directory)"),
    _k("channels-last", "train.channels_last", bool, BOOL,
       "true: image batches channels-last (0-19% faster on CPU; results differ by rounding)"),
)  # fmt: skip

# Hydra paths no key names (``overrides`` sets them) that are validated all the same.
HYDRA_ONLY: tuple[Key, ...] = (
    _k("", "train.momentum", float, ((lambda v: 0 <= v < 1), "a number in [0, 1)")),
    _k("", "train.weight_decay", float, ((lambda v: v >= 0), "a number >= 0")),
    _k("", "data.shards_per_partition", int, INT_GE1),
    _k("", "method.em.record", bool, BOOL, if_missing=False),  # ProFL only
    _k("", "method.stage1_prefix", str, _one_of(STAGE1_PREFIXES)),
    _k("", "method.condense", str, _one_of(CONDENSE_MODES)),
    _k("", "method.condense_rounds", int, INT_GE1),
)  # fmt: skip

BY_NAME: dict[str, Key] = {k.name: k for k in KEYS}
META_KEYS = tuple(k.name for k in KEYS if k.path.startswith(META))
# run-config key -> Hydra path ("group:" keys pick a file of a conf/ group).
RUN_CONFIG_KEYS: dict[str, str] = {k.name: k.path for k in KEYS if k.name not in META_KEYS}
CHECKED: tuple[Key, ...] = tuple(
    k for k in KEYS + HYDRA_ONLY if not k.path.startswith((GROUP, META))
)  # every Hydra path validate() checks


def label_of(path: str) -> str:
    """How an error message names a Hydra path: by its key where one sets it."""
    key = next((k for k in KEYS if k.path == path), None)
    return key.label if key is not None else f"'{path}'"


def group_options(conf_dir: Path, group: str) -> list[str]:
    """The files of ``conf/<group>/``: the values a ``group:`` key may take.

    A file whose name starts with ``_`` is a part the others compose (``method/_base``),
    not an option.
    """
    return sorted(p.stem for p in (conf_dir / group).glob("*.yaml") if not p.stem.startswith("_"))


def help_of(key: Key, conf_dir: Path) -> str:
    """The comment of ``key`` in ``pyproject.toml``: its help, a group's options."""
    if key.group:
        return " | ".join(group_options(conf_dir, key.group))
    return key.help


def pyproject_block(conf_dir: Path) -> str:
    """``[tool.flwr.app.config]``'s body as ``pyproject.toml`` must spell it."""
    lines = []
    for key in KEYS:
        entry = f'{key.name} = "{key.default}"'
        comment = help_of(key, conf_dir)
        lines.append(f"{entry:<28} # {comment}" if comment else entry)
    return "\n".join(lines) + "\n"


def markdown_table(conf_dir: Path) -> str:
    """A Markdown table of every key: what it sets, its type and what is allowed."""
    rows = ["| key | sets | type | allowed | what it does |", "|---|---|---|---|---|"]
    for key in KEYS:
        if key.group:
            sets, allowed = f"`conf/{key.group}/`", ", ".join(group_options(conf_dir, key.group))
            text = key.help
        elif key.path.startswith(META):
            group = key.path.removeprefix(META)
            sets = f"`conf/{group}/`" if group else "Hydra overrides"
            allowed = ", ".join(group_options(conf_dir, group)) if group else ""
            text = key.help
        else:
            sets, allowed, text = f"`{key.path}`", key.allowed, key.help
        cells = (f"`{key.name}`", sets, key.kind.__name__, allowed, text)
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Print the pyproject block or the Markdown table (``--pyproject`` / ``--markdown``)."""
    from profl_strategy.run.config import CONF_DIR  # config imports this module

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--pyproject", action="store_true", help="[tool.flwr.app.config]")
    what.add_argument("--markdown", action="store_true", help="a table of every key")
    args = parser.parse_args(argv)
    print(pyproject_block(CONF_DIR) if args.pyproject else markdown_table(CONF_DIR), end="")


if __name__ == "__main__":
    main()
