"""Benchmarks: scripts that print tables (not timed tests), one subpackage per question.

``accuracy`` (how accurate is each method), ``memory`` (how much memory a training call
takes, against the memory model), ``speed`` (where a run's time goes) and ``scale`` (how the
ServerApp grows with the number of nodes); ``common`` holds what they share. docs/benchmarks.md
lists every script and its command.
"""
