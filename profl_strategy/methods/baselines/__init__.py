"""Baselines of the ProFL comparison as strategies of the same app.

Width scaling (AllSmall, HeteroFL, FedRolex) lives in :mod:`.width`, depth
scaling (DepthFL, InclusiveFL) in :mod:`.depth`, the message contract in
:mod:`.protocol`; the Strategy classes build on :mod:`.submodel` in
:mod:`.width_strategies` and :mod:`.depth_strategies`. Every method
picks each node's sub-model from the node's memory budget with ProFL's own
memory model (:mod:`profl_strategy.memory.model`), so all methods face the same
devices.
"""
