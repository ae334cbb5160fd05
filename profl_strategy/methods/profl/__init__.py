"""ProFL (KDD 2025): progressive block-wise training, its schedule, effective
movement, condensing and the step sub-models."""
