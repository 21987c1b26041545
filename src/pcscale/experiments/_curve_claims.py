"""The paper's claims about curves over training (energies, losses): do they coincide,
stay apart, or lie one below the other, step by step? Each returns a
`Verdict`; the tolerances and the conventions for
missing values are documented in `_verdict`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ._verdict import COINCIDE_TOLERANCE, DEPART_THRESHOLD, Verdict, _cannot, _conclude, _finite, _g, _missing


def _cases(cases: Mapping[str, Mapping[str, object]], count: int | None = None):
    """The complete cases (where → {name → equal-length positive float array}), and the
    reason the first incomplete case was left out ("" when none was)."""
    found, reason = {}, "" if cases else "no cells were given"
    for where, curves in cases.items():
        arrays = {name: _finite(np.atleast_1d(np.asarray(curve, dtype=object))) for name, curve in curves.items()}
        bad = [name for name, a in arrays.items() if a is None]
        if (count is not None and len(arrays) != count) or len(arrays) < 2:
            problem = f"it needs {count or 'two or more'} curves, got {', '.join(curves) or 'none'} at {where}"
        elif bad:
            problem = _missing(bad[0], where)
        # From here on no array is None (`bad` is empty).
        elif len({a.size for a in arrays.values() if a is not None}) != 1:
            problem = f"the curves at {where} have different lengths"
        elif any(np.any(a <= 0) for a in arrays.values() if a is not None):
            problem = f"a value at {where} is not positive"
        else:
            found[where] = arrays
            continue
        reason = reason or problem
    return found, reason


def _spread(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """(max − min)/min over the curves, per step."""
    stacked = np.stack(list(arrays.values()))
    return (stacked.max(axis=0) - stacked.min(axis=0)) / stacked.min(axis=0)


def _step(t: int, size: int) -> str:
    return "" if size == 1 else f" (t = {t})"


def coincide(
    cases: Mapping[str, Mapping[str, Sequence[float] | np.ndarray | float]],
    *,
    claim: str,
    tolerance: float = COINCIDE_TOLERANCE,
    excluded: Mapping[str, str] | None = None,
) -> Verdict:
    """Do positive curves (energies, losses) coincide at every step, in every case?

    **Arguments:**

    - `cases`: where (e.g. "N = 2048, no skips") → {curve name (e.g. "F*", "BP loss",
      "DMFT") → one value per step, or a single value}; two curves or more per case,
      of one length.
    - `claim`: the claim's words.
    - `tolerance`: the largest relative spread (max − min)/min allowed at any step.
    - `excluded`: cases that cannot show the claim (where → why, e.g. a width too
      narrow for an infinite-width statement); they make the answer "cannot tell"
      unless another case says no.

    **Returns:** yes when the spread is within `tolerance` at every step of every case;
    the evidence gives the largest spread and where it occurs.
    """
    found, reason = _cases(cases) if cases or not excluded else ({}, "")
    reason = "; ".join([*(excluded or {}).values(), *([reason] if reason else [])])
    if not found:
        return _cannot(claim, reason)
    worst = max(found, key=lambda where: _spread(found[where]).max())
    spread = _spread(found[worst])
    t = int(np.argmax(spread))
    text = (f"largest relative gap between {', '.join(found[worst])} {_g(spread[t])}{_step(t, spread.size)} "
            f"at {worst} (coincide means ≤ {tolerance:g})")
    return _conclude(claim, None if spread[t] <= tolerance else text, reason, text)


def apart(
    cases: Mapping[str, Mapping[str, Sequence[float] | np.ndarray]],
    *,
    claim: str,
    every_step: bool,
    threshold: float = DEPART_THRESHOLD,
) -> Verdict:
    """Are two curves visibly apart, in every case: at some step ("departs") or at every
    step ("stays off")?

    **Arguments:**

    - `cases`: where (e.g. "N = 1, H = 3") → {name → one value per step} for exactly
      two curves, the reference (BP) curve second.
    - `claim`: the claim's words.
    - `every_step`: whether the gap must reach `threshold` at every step (stays off)
      or at one step at least (departs).
    - `threshold`: the smallest relative gap |a − b|/b that counts as apart.

    **Returns:** yes when every case is apart; the evidence gives the case closest to
    failing.
    """
    found, reason = _cases(cases, 2)
    if not found:
        return _cannot(claim, reason)

    def gaps(where):
        a, b = found[where].values()
        return np.abs(a - b) / b

    worst = min(found, key=lambda where: gaps(where).min() if every_step else gaps(where).max())
    gap = gaps(worst)
    t = int(np.argmin(gap) if every_step else np.argmax(gap))
    names = list(found[worst])
    text = (f"{'smallest' if every_step else 'largest'} |{names[0]} − {names[1]}|/{names[1]} {_g(gap[t])}"
            f"{_step(t, gap.size)} at {worst} (apart means ≥ {threshold:g}{' at every step' if every_step else ''})")
    return _conclude(claim, None if gap[t] >= threshold else text, reason, text)


def below(cases: Mapping[str, Mapping[str, Sequence[float] | np.ndarray]], *, claim: str) -> Verdict:
    """Is one curve below another at every step, in every case (e.g. the PC energy below
    the BP loss in narrow networks)?

    **Arguments:** `cases`: where → {name → one value per step} for exactly two
    curves, the lower one first; `claim`.

    **Returns:** yes when the first curve is below the second at every step of every
    case; the evidence gives the case where the ratio comes closest to (or above) 1.
    """
    found, reason = _cases(cases, 2)
    if not found:
        return _cannot(claim, reason)

    def ratio(where):
        low, high = found[where].values()
        return low / high

    worst = max(found, key=lambda where: ratio(where).max())
    r = ratio(worst)
    names = list(found[worst])
    text = (f"{names[0]} < {names[1]} at {int(np.sum(r < 1))}/{r.size} steps at {worst} "
            f"({names[0]}/{names[1]} {_g(r.min())}–{_g(r.max())})")
    return _conclude(claim, None if np.all(r < 1) else text, reason, text)
