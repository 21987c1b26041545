"""Figures from pcscale results (needs the `plot` extra: pip install 'pcscale[plot]')."""

from ._coord import coord_check as coord_check
