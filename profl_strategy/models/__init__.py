"""Block-partitioned architectures for progressive (block-by-block) training.

The architectures are imported on first use (:func:`build_spec`, or an
attribute such as ``CNNSpec``), not with this package: they need torchvision,
which takes seconds to import, and a deployed ClientApp process that only
answers a budget query never builds a model.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from profl_strategy.models.base import BlockNetSpec
from profl_strategy.models.blocknet import BlockNet, build_full_model

__all__ = [
    "MODEL_NAMES",
    "BlockNet",
    "BlockNetSpec",
    "CNNSpec",
    "ResNetSpec",
    "VGGSpec",
    "ViTSpec",
    "build_full_model",
    "build_spec",
]

# "_fine": one block per BasicBlock (ResNet) or per conv (VGG) instead of per stage.
MODEL_NAMES = (
    "cnn",
    "resnet18",
    "resnet34",
    "vgg16",
    "vit",
    "resnet18_fine",
    "resnet34_fine",
    "vgg16_fine",
)
FINE = "_fine"
# Module (under this package) of each name imported on first access.
_LAZY = {
    "CNNSpec": "cnn",
    "LAYERS": "resnet",
    "ResNetSpec": "resnet",
    "VGGSpec": "vgg",
    "ViTSpec": "vit",
}


def __getattr__(name: str) -> Any:
    """Import an architecture's module when one of its names is first asked for."""
    if name in _LAZY:
        return getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_spec(
    name: str,
    *,
    num_classes: int,
    input_shape: tuple[int, int, int],
    width: float = 1.0,
) -> BlockNetSpec:
    """Look up an architecture by its config name.

    Parameters
    ----------
    name : str
        One of ``MODEL_NAMES``.
    num_classes : int
        Size of the classifier output.
    input_shape : tuple[int, int, int]
        ``(channels, height, width)`` of one input image.
    width : float
        Channel multiplier; smaller values give cheaper models for quick runs.

    Raises
    ------
    ValueError
        For an unknown ``name``, a non-positive ``width`` or a shape the
        architecture cannot take.
    """
    from profl_strategy.models.cnn import CNNSpec
    from profl_strategy.models.resnet import LAYERS, ResNetSpec
    from profl_strategy.models.vgg import VGGSpec
    from profl_strategy.models.vit import ViTSpec

    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; expected one of {MODEL_NAMES}")
    if not width > 0:
        raise ValueError(f"width must be > 0, got {width!r}")
    input_shape = tuple(int(d) for d in input_shape)  # type: ignore[assignment]
    fine = name.endswith(FINE)
    base = name.removesuffix(FINE)
    if name == "cnn":
        return CNNSpec(num_classes, input_shape, width)
    if base in LAYERS:
        return ResNetSpec(LAYERS[base], num_classes, input_shape, width, fine=fine)
    if base == "vgg16":
        return VGGSpec(num_classes, input_shape, width, cfg="D", fine=fine)
    return ViTSpec(num_classes, input_shape, width)
