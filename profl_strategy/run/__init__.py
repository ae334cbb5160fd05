"""From a configuration to a running method: the config tree, its keys, the
server's typed settings, and the factory that builds a method on the engine."""
