"""ProFL ServerApp: composes the run, drives the strategy, evaluates and records."""
