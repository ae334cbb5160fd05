"""Unit tests: one process, no Flower engine run, no subprocess; under a minute in all."""
