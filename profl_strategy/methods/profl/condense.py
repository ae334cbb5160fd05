"""Hand-overs between steps: what a finished step passes to the next one.

Stage 1 (back to front): when block ``t + 1`` is done, the output module of
block ``t`` needs a stand-in for block ``t + 1``. Its layers mirror the first
layers of the real block, so they start from the trained weights instead of
from scratch; the rest of the output module (stand-ins for later blocks and
the classifier) is the output module block ``t + 1`` was trained with, where
the shapes match (always with ``output_depth = 0``; with a shorter output
module the classifier's input width changes and it starts anew).

Stage 2 (front to back): when block ``t`` is done, ``out.{t}`` has just been
trained on the real features of blocks ``0 .. t``. Its later stand-ins and its
classifier carry into ``out.{t + 1}`` (or the model's head for the last
block), where shapes match, instead of restarting from their stage-1 weights,
which were fitted behind the stage-1 front. A block that stage 1 never trained
starts from ``out.{t}``'s stand-in for it.
"""

from __future__ import annotations

from torch import nn

from profl_strategy.methods.profl.step_model import GlobalModel


def _leaves(module: nn.Module) -> list[nn.Module]:
    return [
        m
        for m in module.modules()
        if not list(m.children()) and (list(m.parameters()) or list(m.buffers()))  # type: ignore[arg-type]
    ]


def copy_matching_layers(src: nn.Module, dst: nn.Module) -> int:
    """Copy into each layer of ``dst`` the next layer of ``src`` of the same type and shapes.

    Returns the number of layers copied. Layers of ``dst`` without a match keep
    their weights.
    """
    src_leaves = _leaves(src)
    copied, i = 0, 0
    for layer in _leaves(dst):
        target = {k: v.shape for k, v in layer.state_dict().items()}
        while i < len(src_leaves):
            cand = src_leaves[i]
            i += 1
            shapes = {k: v.shape for k, v in cand.state_dict().items()}
            if type(cand) is type(layer) and shapes == target:
                layer.load_state_dict(cand.state_dict())
                copied += 1
                break
    return copied


def condense_into_output_module(model: GlobalModel, t: int) -> int:
    """Initialise ``out.{t}`` from trained block ``t + 1`` and its output module.

    Returns the number of layers copied from the block into the stand-in.
    """
    last = len(model.blocks) - 1
    if not 0 <= t < last:
        raise ValueError(f"block {t} has no output module (valid: 0..{last - 1})")
    out = model.output_module(t)
    copied = copy_matching_layers(model.blocks[t + 1], out.standins[0])
    if t + 1 == last:
        copy_matching_layers(model.head, out.head)
        return copied
    nxt = model.output_module(t + 1)
    for mine, theirs in zip(out.standins[1:], nxt.standins, strict=False):
        mine.load_state_dict(theirs.state_dict())
    copy_matching_layers(nxt.head, out.head)
    return copied


def carry_forward(model: GlobalModel, t: int, block_trained: bool) -> int:
    """Start stage-2 step ``t`` (``t >= 1``) from what step ``t - 1`` trained.

    Returns the number of layers copied. ``block_trained`` is False when stage
    1 did not run: block ``t`` then starts from ``out.{t - 1}``'s stand-in for it.
    """
    last = len(model.blocks) - 1
    if not 1 <= t <= last:
        raise ValueError(f"stage-2 step {t} has no step before it (valid: 1..{last})")
    prev = model.output_module(t - 1)
    copied = 0 if block_trained else copy_matching_layers(prev.standins[0], model.blocks[t])
    if t == last:
        return copied + copy_matching_layers(prev.head, model.head)
    out = model.output_module(t)
    for mine, theirs in zip(out.standins, prev.standins[1:], strict=False):
        copied += copy_matching_layers(theirs, mine)
    return copied + copy_matching_layers(prev.head, out.head)
