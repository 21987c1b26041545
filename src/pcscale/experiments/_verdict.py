"""Verdicts: whether a run's own numbers support a claim of the paper.

Every experiment's summary ends with the paper's claims and, for each, a
`Verdict` computed here from plain numbers
(never from a fixed sentence): "yes" when the numbers support the claim within the
tolerance stated below, "no" when they contradict it, and "cannot tell" (with the
reason) when a value is missing or not a finite number, or there are too few points.
A claim over several groups (depths, steps, cells) is "no" as soon as one complete group
contradicts it, even if another group is missing; otherwise a missing group makes it
"cannot tell".

The tolerances are module constants, so that a reader can see what "rises", "falls like
1/N" or "coincide" means:

- `RISE_SLACK = 1e-3`: a value "rises with width" when the widest width's value is above
  the narrowest's and no step to the next wider width falls by more than this (the
  seed-to-seed noise of a cosine close to 1).
- `EXPONENT_TOLERANCE = 0.25`: a quantity "scales like x^p" when the least-squares slope
  of log(value) against log(x) is within 25% of p (p = −1: slopes −1.25 to −0.75).
- `COINCIDE_TOLERANCE = 0.05`: curves "coincide" when, at every step, the largest of
  them exceeds the smallest by at most 5% of the smallest.
- `DEPART_THRESHOLD = 0.1`: two curves are "apart" (a PC curve departs from, or stays
  off, its BP counterpart) when they differ by at least 10% of the second, at some step
  (departs) or at every step (stays off); visible on the figures' log axes.
- `GAP_FLOOR = 0.1`: the PC–BP gap s − 1 "stays O(1)" when it is at least 0.1 at the
  widest width (theory: ≈ 0.5 and ≈ 2.2 for SP at L = 5, docs/background.md §4.5;
  μPC's 5.4/N with skips and 4/N without, at L = 5, is below 0.1 from N ≈ 54).
- `CLOSED_FORM_TOLERANCE = 1e-6`: a converged numerical solve "reaches F*" when
  |F − F*|/F* ≤ 1e-6 (a solve stopped at relative residual r is off by at most κ·r²
  times the starting gap F(z_0) − F*, far below this at `inference-convergence`'s
  r = 1e-8).
- `OFF_CLOSED_FORM = 1e-3`: a numerical energy is "measurably off" F* when
  |F − F*|/F* ≥ 1e-3.
- `STABLE_SPREAD = 2.0`: a coordinate check is "width-stable" when every layer's scale
  varies by at most a factor of 2 across widths (max/min).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence

import numpy as np

RISE_SLACK = 1e-3
EXPONENT_TOLERANCE = 0.25
COINCIDE_TOLERANCE = 0.05
DEPART_THRESHOLD = 0.1
GAP_FLOOR = 0.1
CLOSED_FORM_TOLERANCE = 1e-6
OFF_CLOSED_FORM = 1e-3
STABLE_SPREAD = 2.0


class Support(enum.Enum):
    """Whether a run supports a claim."""

    YES = "yes"
    NO = "no"
    CANNOT_TELL = "cannot tell"


@dataclasses.dataclass(frozen=True)
class Verdict:
    """A claim of the paper, whether this run supports it, and the numbers that say so.

    - `claim`: the claim, in words.
    - `supported`: a `Support`.
    - `evidence`: the run's numbers behind the answer (or why it cannot tell).
    """

    claim: str
    supported: Support
    evidence: str

    def __str__(self) -> str:
        return f"{self.claim}: {self.supported.value} — {self.evidence}"


def report(verdicts: Sequence[Verdict], section: str) -> str:
    """The closing lines of a summary: a heading that names where the claims come from
    (`section` of docs/background.md), then one line per verdict."""
    heading = f"The paper's claims (docs/background.md {section}), checked on this run's numbers:"
    return "\n".join([heading] + [f"  - {v}" for v in verdicts])


def negate(verdict: Verdict, claim: str) -> Verdict:
    """The verdict on the opposite claim: yes and no swap, the evidence stays."""
    swap = {Support.YES: Support.NO, Support.NO: Support.YES, Support.CANNOT_TELL: Support.CANNOT_TELL}
    return Verdict(claim, swap[verdict.supported], verdict.evidence)


# ------------------------------------------------------------------------- helpers


def _g(value: float) -> str:
    """Three significant figures; scientific notation for small and large values."""
    value = float(value)
    if value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e4):
        return f"{value:.2e}"
    return f"{value:.3g}"


def _x(value: float) -> str:
    """A width or other swept setting, as given (2048, 0.1)."""
    return f"{float(value):g}"


def _signed(value: float, digits: int = 2) -> str:
    """A signed number with a true minus sign."""
    return f"{float(value):.{digits}f}".replace("-", "−")


def _c(value: float) -> str:
    """A cosine: four decimals, so that 0.9990 and 0.9999 differ."""
    return f"{float(value):.4f}"


def _finite(values) -> np.ndarray | None:
    """`values` as a 1-D float array, or None when empty or any entry is missing or not
    finite."""
    try:
        array = np.asarray([np.nan if v is None else v for v in np.ravel(np.asarray(values, dtype=object))],
                           dtype=float)
    except (TypeError, ValueError):
        return None
    if array.size == 0 or not np.all(np.isfinite(array)):
        return None
    return array


def _cannot(claim: str, reason: str) -> Verdict:
    return Verdict(claim, Support.CANNOT_TELL, reason)


def _missing(what: str, where: str = "") -> str:
    at = f" at {where}" if where else ""
    return f"{what}{at} is missing or not a finite number (an unfinished cell or an undefined value)"


def _axis(xs, claim: str, symbol: str) -> tuple[np.ndarray | None, Verdict | None]:
    """The swept setting (widths, γ0…) as an increasing positive array, or why not."""
    array = _finite(xs)
    if array is None:
        return None, _cannot(claim, _missing(f"a value of {symbol}"))
    if array.size < 2:
        return None, _cannot(claim, f"it needs two values of {symbol} or more, got {symbol} = "
                                    f"{', '.join(_x(w) for w in array)}")
    if np.any(np.diff(array) <= 0) or array[0] <= 0:
        return None, _cannot(claim, f"the values of {symbol} must be positive and increase, got "
                                    f"{', '.join(_x(w) for w in array)}")
    return array, None


def _series(values: Mapping[str, Sequence[float | None]], size: int, what: str) -> tuple[dict[str, np.ndarray], str]:
    """The complete groups of `values` (label → one finite value per point), and the
    reason the first incomplete group was left out ("" when none was)."""
    complete, reason = {}, ""
    for label, curve in values.items():
        array = _finite(curve)
        if array is None or array.size != size:
            reason = reason or (_missing(what, label) if array is None
                                else f"{label} has {array.size} values for {size} points")
            continue
        complete[label] = array
    if not values:
        reason = "no values were given"
    return complete, reason


def _conclude(claim: str, failure: str | None, reason: str, success: str) -> Verdict:
    """No when a complete group failed; cannot tell when a group was incomplete (saying
    what the complete ones show); else yes."""
    if failure is not None:
        return Verdict(claim, Support.NO, failure)
    if reason:
        return _cannot(claim, f"{reason}; where it can tell: {success}" if success else reason)
    return Verdict(claim, Support.YES, success)
