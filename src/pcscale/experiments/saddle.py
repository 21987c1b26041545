"""`saddle` — Figures A.4 (skips) and A.23 (no skips): the saddle-to-saddle regime of
narrow deep linear networks, where PC departs from BP (docs/background.md §5.5)."""

from __future__ import annotations

from ._claims import apart
from ._results import CellResult
from ._verdict import Verdict
from .toy import Groups, ToyConfig, experiment


def claims(config: ToyConfig, results: list[CellResult]) -> list[Verdict]:
    """The narrowest network of every depth, seeds averaged: the PC energy F* departs
    visibly from the BP loss (S − I = O(L/N) is large)."""
    groups = Groups(config, results)
    narrowest = groups.widths[0]
    cases = {groups.label(key, width=narrowest): {"F*": groups.mean(key, narrowest, "pc_energy"),
                                                  "BP loss": groups.mean(key, narrowest, "bp_loss")}
             for key in groups.keys}
    return [apart(cases, claim="in the narrowest networks the PC energy F* departs from the BP loss",
                  every_step=False)]


EXPERIMENT = experiment(
    "saddle",
    "Figures A.4 / A.23: saddle-to-saddle dynamics of narrow networks, PC against BP on a log-time axis",
    ToyConfig(widths=(1, 4), hidden_layers=(1, 3), steps=300, dmft=False),
    ToyConfig(widths=(1, 4, 8), hidden_layers=(1, 3, 5, 7), steps=1000, dmft=False),
    claims=claims, section="§5.5",
)
