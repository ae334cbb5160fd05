"""The strategy engine: what every method of the comparison shares.

Rounds, nodes and their budgets, the message contract, merging, checkpoints and
the run's failure rules live here. A method (:mod:`profl_strategy.methods`) says
what to train each round; the engine runs it. Nothing here imports a method.
"""
