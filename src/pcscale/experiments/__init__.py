"""Experiments: one module per study, each with a frozen config and a `run`."""
