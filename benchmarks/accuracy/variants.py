"""The comparison's named variants: a ``conf/method`` entry plus run-config of its own.

Each variant is one table row (``compare --methods profl-capped,...``) and changes one of
ProFL's defaults or a baseline's, so an ablation is a row of the same comparison rather than
a preset of its own. :func:`benchmarks.accuracy.runner.run_command` turns a name into its
``method=`` and run-config; :data:`NEEDS` lets the runner stop before a long run whose
ClientApp lacks a method's handler.
"""

from __future__ import annotations

# Named variants: a conf/method entry plus run-config of its own, one table row each.
# profl-capped: effective movement cannot end a step early (patience longer than any step;
# a threshold near 0 is not enough: the denoised form reads exactly 0 on noise), so every
# step runs to its cap, with every candidate form logged (benchmarks/accuracy/em_stops.py);
# profl-denoised: effective movement net of client-sampling noise
# (profl_strategy/methods/profl/movement.py);
# the rest switch one of ProFL's defaults back or off, for the ablations (README).
# Variants measured before effective movement had a floor (em-min-share, default 0.75
# since 2026-12-03) pin it to 0, as they ran.
NO_FLOOR = " em-min-share=0"
VARIANTS = {
    "profl-plans": ("profl", "plans='exact'"),
    "profl-noplans": ("profl", "plans='off'"),
    "profl-capped": ("profl", "em-patience=100000 overrides='method.em.record=true'"),
    # effective movement may end stage-2 steps under the shared budget (the default
    # until 2026-11-28, run as profl-w8tau02 / profl then)
    "profl-emstops": ("profl", "em-stop='always'" + NO_FLOOR),
    # a stop under the shared budget shortens the run (later steps keep their shares);
    # effective movement may end a step only after 3/4 of its share
    "profl-save75": ("profl", "em-stop='save' em-min-share=0.75"),
    "profl-denoised": (
        "profl",
        "em-variant='denoised' em-window=4 em-threshold=0.5 em-stop='always'" + NO_FLOOR,
    ),
    "profl-vector": (
        "profl",
        "em-variant='vector' em-window=4 em-threshold=0.6 em-stop='always'" + NO_FLOOR,
    ),
    "profl-l1": (
        "profl",
        "em-variant='vector' em-norm='l1' em-window=6 em-sample=10000 em-stop='always'" + NO_FLOOR,
    ),
    "profl-shrink": ("profl", "overrides='method.shrink=true'" + NO_FLOOR),
    "profl-noshrink": ("profl", "overrides='method.shrink=false'"),
    "profl-fixedcaps": ("profl", "share-rounds=false" + NO_FLOOR),
    # denoised EM over 8 rounds at tau 0.2: a step ends once client-sampling noise explains
    # almost all of its net movement (the em_stops sweep over capped runs, README)
    "profl-w8tau02": ("profl", "em-window=8 em-threshold=0.2 em-stop='always'" + NO_FLOOR),
    "profl-fixedcaps-w8tau02": (
        "profl",
        "share-rounds=false em-window=8 em-threshold=0.2" + NO_FLOOR,
    ),
    # fixed caps; effective movement may end a step only after 3/4 of its cap
    "profl-fixedcaps-share75": ("profl", "share-rounds=false em-min-share=0.75"),
    # fixed caps, and effective movement may also end the last step (the paper's stop)
    "profl-fixedcaps-endlast": ("profl", "share-rounds=false em-end-last=true" + NO_FLOOR),
    "profl-nomem": ("profl", "overrides='method.memory_aware=false'"),
    "profl-depth1": ("profl", "overrides='method.output_depth=1'"),
    "profl-nocarry": ("profl", "overrides='method.carry_forward=false'"),
    "profl-5ep": ("profl", "local-epochs=5"),
    "allsmall-5ep": ("allsmall", "local-epochs=5"),  # the 5-epoch ablation's reference
    "fedavg-5ep": ("fedavg", "local-epochs=5"),  # the 5-epoch reference that ignores memory
    "heterofl-5ep": ("heterofl", "local-epochs=5"),
    "fedrolex-5ep": ("fedrolex", "local-epochs=5"),
    "exclusive-5ep": ("exclusive", "local-epochs=5"),
    "depthfl-5ep": ("depthfl", "local-epochs=5"),
    "inclusivefl-5ep": ("inclusivefl", "local-epochs=5"),
    "profl-10nodes": ("profl", "fraction-train=0.5"),
    "profl-sqrtshare": ("profl", "share-by='sqrt-params'"),
    "profl-paramshare": ("profl", "share-by='params'"),
    # the authors' stage 1 (issue 15): real blocks at their initial weights as the
    # prefix, condensing by distillation, and both (with our effective movement)
    "profl-initial": (
        "profl",
        "overrides='method.shrink=true method.stage1_prefix=initial'" + NO_FLOOR,
    ),
    "profl-distill": ("profl", "overrides='method.shrink=true method.condense=distill'" + NO_FLOOR),
    "profl-authors": (
        "profl",
        "overrides='method.shrink=true method.stage1_prefix=initial method.condense=distill'"
        + NO_FLOOR,
    ),
}
# Handlers a method needs on the ClientApp (message types), to fail before a long run.
NEEDS = {
    "allsmall": "train.width",
    "heterofl": "train.width",
    "fedrolex": "train.width",
    "depthfl": "train.depth",
    "inclusivefl": "train.depth",
}
