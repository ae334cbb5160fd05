"""The key of a model's shapes, shared by the memory model, the protocol and the baselines."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from profl_strategy.models import build_spec
from profl_strategy.models.base import BlockNetSpec


@dataclass(frozen=True)
class ModelKey:
    """Everything that fixes a model's shapes; hashable, so estimates can be cached."""

    name: str
    num_classes: int
    input_shape: tuple[int, int, int]
    width: float = 1.0
    out_depth: int = 0  # blocks an output module stands in for (0: all later ones)
    stage1_prefix: str = "pool"  # what feeds block t in stage 1: "pool" | "initial"

    def spec(self) -> BlockNetSpec:
        """The architecture's block factory (built once per key)."""
        return _spec(self.name, self.num_classes, self.input_shape, self.width)


@lru_cache(maxsize=32)
def _spec(
    name: str, num_classes: int, input_shape: tuple[int, int, int], width: float
) -> BlockNetSpec:
    return build_spec(name, num_classes=num_classes, input_shape=input_shape, width=width)
