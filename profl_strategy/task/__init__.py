"""The learning task every method shares: datasets, partitions, training and evaluation loops.

Nothing is imported here, so that importing one module of the package (a
ClientApp answering a budget query, for instance) loads no more than it needs.
"""
