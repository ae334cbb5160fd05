"""Helpers every question shares: the machine a run was timed on (``machine``), runs on a CPU
each (``pool``), the app's commit (``revision``) and the lent GPU machine's bundle
(``gpu_bundle``)."""
