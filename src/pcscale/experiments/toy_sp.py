"""`toy-sp` — Figures A.18–A.19: the toy task under SP (uniform init, no multipliers but
1/γ0, GD rate η unscaled, no DMFT), where s − 1 stays O(1) at every width
(docs/background.md §5.3)."""

from __future__ import annotations

from .toy import ToyConfig, experiment

EXPERIMENT = experiment(
    "toy-sp",
    "Figures A.18–A.19: the toy task under SP, where the PC–BP gap s − 1 does not shrink with width",
    ToyConfig(parameterisation="sp", dmft=False),
    ToyConfig(parameterisation="sp", dmft=False, widths=(8, 16, 32, 64, 128, 256, 512, 1024, 2048), steps=100),
    section="§5.3",
)
