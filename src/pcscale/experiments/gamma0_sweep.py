"""`gamma0-sweep` — Figures A.3 (skips) and A.22 (no skips): BP learning regimes across
the output scale γ0 at fixed width, with a DMFT curve per γ0 (science.md §5.4)."""

from __future__ import annotations

from .toy import ToyConfig, experiment

EXPERIMENT = experiment(
    "gamma0-sweep",
    "Figures A.3 / A.22: lazy to feature-learning regimes across γ0 at fixed width, with DMFT curves",
    ToyConfig(widths=(512,), gamma0s=(0.1, 1.0, 4.0)),
    ToyConfig(widths=(2048,), gamma0s=(0.1, 0.5, 1.0, 2.0, 3.0, 4.0), steps=100),
)
