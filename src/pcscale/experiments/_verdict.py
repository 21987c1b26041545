"""Verdicts: whether a run's own numbers support a claim of the paper.

Every experiment's summary ends with the paper's claims and, for each, a
[`Verdict`][pcscale.experiments._verdict.Verdict] computed here from plain numbers
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
    - `supported`: a [`Support`][pcscale.experiments._verdict.Support].
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


def _series(values: Mapping[str, Sequence[float]], size: int, what: str) -> tuple[dict[str, np.ndarray], str]:
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


# ---------------------------------------------------------------- width trends


def rises_with_width(
    widths: Sequence[float],
    values: Mapping[str, Sequence[float]],
    *,
    claim: str = "PC–BP gradient cosine rises with width",
    symbol: str = "N",
    slack: float = RISE_SLACK,
) -> Verdict:
    """Does a value (a cosine) rise with width in every group (depth, step…)?

    **Arguments:**

    - `widths`: increasing widths.
    - `values`: group label (e.g. "H = 7", "t = 0") → one value per width.
    - `claim`: the claim's words. `symbol`: the width's symbol ("N", "C", "d").
    - `slack`: the largest fall allowed between neighbouring widths.

    **Returns:** yes when in every group the widest value exceeds the narrowest and no
    step to a wider width falls by more than `slack`; the evidence gives the group with
    the smallest rise, or the first group where it fails.
    """
    axis, problem = _axis(widths, claim, symbol)
    if problem:
        return problem
    series, reason = _series(values, axis.size, "a value")
    n0, n1 = _x(axis[0]), _x(axis[-1])
    failure = None
    for label, array in series.items():
        drops = array[:-1] - array[1:]
        worst = int(np.argmax(drops))
        if drops[worst] > slack:
            failure = (f"falls from {_c(array[worst])} ({symbol} = {_x(axis[worst])}) to {_c(array[worst + 1])} "
                       f"({symbol} = {_x(axis[worst + 1])}) at {label}")
        elif array[-1] <= array[0]:
            failure = f"{_c(array[0])} → {_c(array[-1])} ({symbol} = {n0} → {n1}) at {label}, no rise"
        if failure:
            break
    success = ""
    if series:
        label = min(series, key=lambda k: series[k][-1] - series[k][0])
        where = "" if len(series) == 1 else f" at {label} (the smallest rise)"
        success = f"{_c(series[label][0])} → {_c(series[label][-1])} ({symbol} = {n0} → {n1}){where}"
    return _conclude(claim, failure, reason, success)


def scales_like_power(
    xs: Sequence[float],
    values: Mapping[str, Sequence[float]],
    exponent: float,
    *,
    claim: str,
    symbol: str = "N",
    tolerance: float = EXPONENT_TOLERANCE,
) -> Verdict:
    """Does a positive quantity scale like `symbol`^`exponent` in every group?

    **Arguments:**

    - `xs`: increasing positive values of the variable (widths, γ0…).
    - `values`: group label → the quantity at each x (positive).
    - `exponent`: the predicted power p.
    - `claim`: the claim's words. `symbol`: the variable's symbol.
    - `tolerance`: the largest |slope − p| allowed, as a fraction of |p|.

    **Returns:** yes when every group's least-squares slope of log(value) against
    log(x) is within `tolerance`·|p| of p; the evidence lists the slopes.
    """
    axis, problem = _axis(xs, claim, symbol)
    if problem:
        return problem
    series, reason = _series(values, axis.size, "a value")
    for label in [k for k, a in series.items() if np.any(a <= 0)]:
        del series[label]
        reason = reason or (f"a value at {label} is not positive, so it has no logarithm (float32 cannot resolve "
                            "a gap below ≈ 1e-6: use float64)")
    slopes = {label: float(np.polyfit(np.log(axis), np.log(a), 1)[0]) for label, a in series.items()}
    listed = ", ".join(_signed(v) + ("" if len(slopes) == 1 else f" ({label})") for label, v in slopes.items())
    text = (f"measured slope {listed} over {symbol} = {_x(axis[0])}–{_x(axis[-1])}, predicted "
            f"{_signed(exponent, 0)} ± {tolerance * abs(exponent):g}") if slopes else ""
    within = all(abs(v - exponent) <= tolerance * abs(exponent) for v in slopes.values())
    return _conclude(claim, None if within else text, reason, text)


def falls_like_inverse_width(widths: Sequence[float], gaps: Mapping[str, Sequence[float]], *,
                             quantity: str = "s − 1") -> Verdict:
    """The PC–BP gap s − 1 (or `quantity`, e.g. tr(S − I)/d_y) falls like 1/N
    (docs/background.md §4.4): [`scales_like_power`][pcscale.experiments._verdict.scales_like_power]
    with p = −1."""
    return scales_like_power(widths, gaps, -1.0, claim=f"{quantity} falls like 1/N")


def scales_like_inverse_gamma0_squared(gamma0s: Sequence[float], gaps: Mapping[str, Sequence[float]]) -> Verdict:
    """The PC–BP gap s − 1 scales like 1/γ0² (docs/background.md §4.4):
    [`scales_like_power`][pcscale.experiments._verdict.scales_like_power] with p = −2."""
    return scales_like_power(gamma0s, gaps, -2.0, claim="s − 1 scales like 1/γ0²", symbol="γ0")


def theory_shrinks(predicted: Mapping[str, Sequence[float]]) -> bool:
    """Whether the predicted gap (group label → one value per increasing width) shrinks
    with width, which decides the claim a run is checked against: "falls like 1/N"
    (μP family) or "stays O(1)" (SP, NTP). True when some group's finite predictions
    fall by more than half from the narrowest to the widest width, or when there is no
    prediction to go by."""
    found = False
    for values in predicted.values():
        array = np.asarray([np.nan if v is None else v for v in values], dtype=float)
        array = array[np.isfinite(array)]
        if array.size >= 2:
            found = True
            if array[-1] < 0.5 * array[0]:
                return True
    return not found


def stays_off(widths: Sequence[float], gaps: Mapping[str, Sequence[float]], *, floor: float = GAP_FLOOR) -> Verdict:
    """The PC–BP gap s − 1 stays O(1) however wide the network (SP, NTP;
    docs/background.md §4.5): yes when every group's gap at the widest width is at
    least `floor`.

    **Arguments:** `widths` and `gaps` (group label → s − 1 per width), as for
    [`scales_like_power`][pcscale.experiments._verdict.scales_like_power]; `floor`.
    """
    claim = "s − 1 stays O(1) at every width, so PC ≠ BP however wide"
    axis, problem = _axis(widths, claim, "N")
    if problem:
        return problem
    series, reason = _series(gaps, axis.size, "s − 1")
    last = {label: a[-1] for label, a in series.items()}
    listed = ", ".join(_g(v) + ("" if len(last) == 1 else f" ({label})") for label, v in last.items())
    text = f"s − 1 = {listed} at N = {_x(axis[-1])} (O(1) means ≥ {floor:g})" if last else ""
    return _conclude(claim, None if all(v >= floor for v in last.values()) else text, reason, text)


# ------------------------------------------------------------- curves over training


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
        elif len({a.size for a in arrays.values()}) != 1:
            problem = f"the curves at {where} have different lengths"
        elif any(np.any(a <= 0) for a in arrays.values()):
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
    cases: Mapping[str, Mapping[str, Sequence[float] | float]],
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
    cases: Mapping[str, Mapping[str, Sequence[float]]],
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


def below(cases: Mapping[str, Mapping[str, Sequence[float]]], *, claim: str) -> Verdict:
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


# ----------------------------------------------------------------- inference


def reaches_closed_form(
    errors: Mapping[str, Sequence[float]],
    *,
    claim: str = "μPC: numerical inference that met its tolerance reaches F*",
    tolerance: float = CLOSED_FORM_TOLERANCE,
) -> Verdict:
    """Do converged numerical solves reach the closed-form energy?

    **Arguments:**

    - `errors`: run label (e.g. "H = 3, cg") → |F − F*|/F* at the steps whose inference
      met its tolerance (empty when none did).
    - `claim`; `tolerance`: the largest error that counts as reaching F*.

    **Returns:** yes when every converged solve is within `tolerance`; cannot tell when
    no solve converged.
    """
    found, reason = {}, ""
    for label, values in ((k, v) for k, v in errors.items() if len(v)):
        array = _finite(values)
        if array is None:
            reason = reason or _missing("|F − F*|/F*", label)
        else:
            found[label] = float(array.max())
    if not found:
        return _cannot(claim, reason or ("no numerical solve met its tolerance, so none can show it" if errors
                                         else "no numerical run has finished"))
    label = max(found, key=found.get)
    text = (f"largest |F − F*|/F* of a converged solve {_g(found[label])} ({label}; {len(found)} runs with "
            f"converged solves; reaching means ≤ {tolerance:g})")
    return _conclude(claim, None if found[label] <= tolerance else text, reason, text)


def off_closed_form(
    errors: Mapping[int, Sequence[float]],
    *,
    claim: str,
    floor: float = OFF_CLOSED_FORM,
    compare: Mapping[int, Sequence[float]] | None = None,
    compare_name: str = "μPC",
) -> Verdict:
    """Does a numerical energy stay measurably off F* within its budget, in the deepest
    network (where the claim bites: the conditioning worsens with depth)?

    **Arguments:**

    - `errors`: H → |F − F*|/F* at every training step, with the budget in question.
    - `claim`; `floor`: the smallest error that counts as "measurably off".
    - `compare`, `compare_name`: the same for another parameterisation with the same
      budget, quoted in the evidence.

    **Returns:** yes when, at the largest H, the error is at least `floor` at every
    step.
    """
    if not errors:
        return _cannot(claim, "the budget in question has not run (not among the modes, or unfinished)")
    deepest = max(errors)
    array = _finite(errors[deepest])
    if array is None:
        return _cannot(claim, _missing("|F − F*|/F*", f"H = {deepest}"))
    text = f"|F − F*|/F* {_g(array.min())}–{_g(array.max())} at H = {deepest}"
    other = _finite(compare[deepest]) if compare and deepest in compare else None
    if other is not None:
        text += f" ({compare_name} {_g(other.min())}–{_g(other.max())})"
    text += f"; measurably off means ≥ {floor:g} at every step"
    return _conclude(claim, None if array.min() >= floor else text, "", text)


def grows_with_depth(
    iterations: Mapping[str, Mapping[int, float]],
    *,
    claim: str = "deeper networks need more inference iterations",
) -> Verdict:
    """Do solves need more iterations as depth grows?

    **Arguments:**

    - `iterations`: series label (e.g. "μPC CG") → {H: iterations (e.g. the median
      over training steps)}; series with fewer than two depths are left out.
    - `claim`: the claim's words.

    **Returns:** yes when every series strictly increases with H.
    """
    parts, failure, reason = [], None, ""
    for label, by_depth in iterations.items():
        if len(by_depth) < 2:
            continue
        depths = sorted(by_depth)
        values = _finite([by_depth[h] for h in depths])
        if values is None:
            reason = reason or _missing("an iteration count", label)
            continue
        part = f"{label} {' → '.join(f'{v:g}' for v in values)} (H = {' → '.join(map(str, depths))})"
        parts.append(part)
        if failure is None and not np.all(np.diff(values) > 0):
            failure = part
    if not parts and not reason:
        return _cannot(claim, "it needs two depths or more")
    return _conclude(claim, failure, reason, "; ".join(parts))


# ------------------------------------------------------------------ coordinate checks


def width_stable(spreads: Mapping[str, float], *, claim: str, limit: float = STABLE_SPREAD) -> Verdict:
    """Are a coordinate check's scales width-stable?

    **Arguments:**

    - `spreads`: quantity (e.g. "activation", "update") → the largest, over layers, of
      max/min over widths of that layer's scale.
    - `claim`; `limit`: the largest spread that counts as stable.

    **Returns:** yes when every spread is at most `limit`.
    """
    found, reason = {}, "" if spreads else "no spreads were given"
    for name, value in spreads.items():
        array = _finite([value])
        if array is None:
            reason = reason or _missing(f"the {name} spread")
        else:
            found[name] = float(array[0])
    if not found:
        return _cannot(claim, reason)
    text = (f"largest spread across widths: {', '.join(f'{name} {_g(v)}' for name, v in found.items())} "
            f"(stable means ≤ {limit:g})")
    return _conclude(claim, None if all(v <= limit for v in found.values()) else text, reason, text)
