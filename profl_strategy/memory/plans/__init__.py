"""Training plans: how a node fits a ProFL step into a smaller memory budget.

- :mod:`profl_strategy.memory.plans.plan`: what a plan is, and the candidates;
- :mod:`profl_strategy.memory.plans.forward`: running a step model the way a plan does;
- :mod:`profl_strategy.memory.plans.memory`: what a plan costs, and which fits a budget;
- :mod:`profl_strategy.memory.plans.picker`: the server's per-node choice;
- :mod:`profl_strategy.memory.plans.train`: the plan-aware local training loop.

Only :data:`PLAN_MODES` lives here, so that the configuration can validate the
``plans`` setting without importing torch and the plan stack.
"""

PLAN_MODES = ("off", "exact", "any")
