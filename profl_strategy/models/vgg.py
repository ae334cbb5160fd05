"""VGG16-BN split into five blocks, one per max-pool (or one per conv)."""

from __future__ import annotations

from torch import nn
from torchvision.models.vgg import cfgs, make_layers
from torchvision.ops import Conv2dNormActivation

from profl_strategy.models.base import BlockNetSpec
from profl_strategy.models.blocknet import check_index, check_shape, scale

Cfg = list[str | int]


def split_cfg(cfg: Cfg, fine: bool = False) -> list[Cfg]:
    """Cut a torchvision VGG config after every ``"M"`` (max-pool).

    With ``fine`` every conv is a block of its own; a max-pool stays with the
    conv before it.
    """
    stages: list[Cfg] = [[]]
    for v in cfg:
        if fine and v != "M" and stages[-1]:
            stages.append([])
        stages[-1].append(v)
        if v == "M":
            stages.append([])
    return [s for s in stages if s]


def init_like_vgg(module: nn.Module) -> nn.Module:
    """Apply the initialisation ``torchvision.models.VGG.__init__`` uses.

    Pieces are built one at a time here, so the whole-model init loop of
    torchvision never runs and must be repeated per piece.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.constant_(m.bias, 0)
    return module


class VGGSpec(BlockNetSpec):
    """VGG with batch norm (config "D" by default), cut at its five max-pools.

    Each block ends with its max-pool, so inputs must be at least 32 pixels
    high and wide. The head global-average-pools before its single linear
    layer, which is a no-op at 32x32 (1x1 after five pools) and keeps larger
    inputs working.

    Parameters
    ----------
    num_classes : int
        Size of the classifier output.
    input_shape : tuple[int, int, int]
        ``(channels, height, width)`` of one input image.
    width : float
        Multiplier for every conv's channel count.
    cfg : str
        Key of ``torchvision.models.vgg.cfgs``.
    fine : bool
        One block per conv (VGG16: 13) instead of one per max-pool.
    """

    def __init__(
        self,
        num_classes: int,
        input_shape: tuple[int, int, int],
        width: float = 1.0,
        cfg: str = "D",
        fine: bool = False,
    ) -> None:
        check_shape(input_shape, num_classes)
        scaled = [v if v == "M" else scale(int(v), width) for v in cfgs[cfg]]
        self.stages = split_cfg(scaled, fine)
        self.num_blocks = len(self.stages)
        pools = scaled.count("M")
        if min(input_shape[1:]) < 2**pools:
            raise ValueError(
                f"vgg needs inputs of at least {2**pools}x{2**pools} pixels for its "
                f"{pools} max-pools, got input_shape={tuple(input_shape)!r}"
            )
        self.num_classes = num_classes
        self.input_shape = tuple(input_shape)  # type: ignore[assignment]
        # Input channels of each block, then the last block's output channels.
        self.channels = [input_shape[0]] + [int(s[0]) for s in self.stages]

    def make_block(self, t: int) -> nn.Module:
        check_index(t, self.num_blocks)
        block = make_layers(self.stages[t], batch_norm=True)
        # make_layers assumes RGB input; the block's real input is the
        # previous block's output (or the image's own channels for t = 0).
        first: nn.Conv2d = block[0]
        block[0] = nn.Conv2d(self.channels[t], first.out_channels, 3, padding=1)
        return init_like_vgg(block)

    def make_head(self) -> nn.Module:
        head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(1),
            nn.Linear(self.channels[-1], self.num_classes),
        )
        return init_like_vgg(head)

    def make_standin(self, t: int) -> nn.Module:
        check_index(t, self.num_blocks)
        # Indices 0 (conv) and 1 (BN) match the real block's first conv and BN.
        standin = Conv2dNormActivation(
            self.channels[t], self.channels[t + 1], kernel_size=3, bias=True
        )
        if self.stages[t][-1] == "M":
            standin.append(nn.MaxPool2d(kernel_size=2, stride=2))
        return init_like_vgg(standin)
