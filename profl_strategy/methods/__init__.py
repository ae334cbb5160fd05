"""The methods of the comparison, each a subclass of the engine
(:class:`profl_strategy.engine.engine.Engine`): ProFL (:mod:`.profl`) and the
baselines (:mod:`.baselines`)."""
