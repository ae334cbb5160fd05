"""End-to-end tests: flwr run, a deployment, the wheel and FAB, kill and resume."""
