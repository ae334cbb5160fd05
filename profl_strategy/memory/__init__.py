"""Memory: the estimator of a step's peak (:mod:`.model`), measured peaks and
traces, the node-side guard, device memory, and training plans (:mod:`.plans`)
that fit a step into a smaller budget."""
