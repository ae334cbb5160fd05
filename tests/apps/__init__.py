"""ClientApps that misbehave on purpose, for fault-injection tests."""
