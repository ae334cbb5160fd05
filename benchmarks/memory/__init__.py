"""How much memory does a training call take, and how well does the memory model predict it?

``cpu`` measures calls on the CPU against the prediction, one fresh process a row; ``steps``
and ``plans`` estimate (and on CUDA measure) the peaks of ProFL's steps without and with
training plans (``plan_checks``: that the plans train the same weights); ``methods`` does
so for every method's per-client jobs; ``model_check`` re-reads recorded CUDA peaks
against the model with its cuBLAS term.
"""
