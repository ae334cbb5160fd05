"""The error a run's configuration raises, wherever it is found out.

Composing the config (:mod:`profl_strategy.run.config`), the engine's feasibility
check and the task layer's partition check all refuse a configuration the same
way, so the type sits below all three.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration key has a value the app cannot run with."""
