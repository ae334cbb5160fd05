"""Integration tests: the in-process engine, ClientApp handlers on data, fresh processes."""
