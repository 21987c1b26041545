"""`saddle` — Figures A.4 (skips) and A.23 (no skips): the saddle-to-saddle regime of
narrow deep linear networks, where PC departs from BP (science.md §5.5)."""

from __future__ import annotations

from .toy import ToyConfig, experiment

EXPERIMENT = experiment(
    "saddle",
    "Figures A.4 / A.23: saddle-to-saddle dynamics of narrow networks, PC against BP on a log-time axis",
    ToyConfig(widths=(1, 4), hidden_layers=(1, 3), steps=300, dmft=False),
    ToyConfig(widths=(1, 4, 8), hidden_layers=(1, 3, 5, 7), steps=1000, dmft=False),
)
