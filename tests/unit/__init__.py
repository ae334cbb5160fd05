"""Unit tests: one process, no Flower engine run, no subprocess; about a minute in all."""
