"""The paper's claims as functions of plain numbers: each returns a
`Verdict` (yes / no / cannot tell, with the
evidence). The tolerances and the conventions for missing values are documented in
`_verdict`. Trends across widths, depths and γ0, inference against the closed form and
coordinate checks are here; the claims about curves over training (`coincide`, `apart`,
`below`) are in `_curve_claims` and are imported here too, so that every claim can be
imported from this module."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ._curve_claims import apart, below, coincide
from ._verdict import (
    CLOSED_FORM_TOLERANCE,
    EXPONENT_TOLERANCE,
    GAP_FLOOR,
    OFF_CLOSED_FORM,
    RISE_SLACK,
    STABLE_SPREAD,
    Verdict,
    _axis,
    _c,
    _cannot,
    _conclude,
    _finite,
    _g,
    _missing,
    _series,
    _signed,
    _x,
)

__all__ = [
    "apart", "below", "coincide", "falls_like_inverse_width", "grows_with_depth", "off_closed_form",
    "reaches_closed_form", "rises_with_width", "scales_like_inverse_gamma0_squared", "scales_like_power",
    "stays_off", "theory_shrinks", "width_stable",
]

# ---------------------------------------------------------------- width trends


def rises_with_width(
    widths: Sequence[float],
    values: Mapping[str, Sequence[float | None]],
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
    assert axis is not None  # `_axis` gives either the axis or the problem
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
    values: Mapping[str, Sequence[float | None]],
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
    assert axis is not None  # `_axis` gives either the axis or the problem
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


def falls_like_inverse_width(widths: Sequence[float], gaps: Mapping[str, Sequence[float | None]], *,
                             quantity: str = "s − 1") -> Verdict:
    """The PC–BP gap s − 1 (or `quantity`, e.g. tr(S − I)/d_y) falls like 1/N
    (docs/background.md §4.4): `scales_like_power`
    with p = −1."""
    return scales_like_power(widths, gaps, -1.0, claim=f"{quantity} falls like 1/N")


def scales_like_inverse_gamma0_squared(gamma0s: Sequence[float], gaps: Mapping[str, Sequence[float | None]]) -> Verdict:
    """The PC–BP gap s − 1 scales like 1/γ0² (docs/background.md §4.4):
    `scales_like_power` with p = −2."""
    return scales_like_power(gamma0s, gaps, -2.0, claim="s − 1 scales like 1/γ0²", symbol="γ0")


def theory_shrinks(predicted: Mapping[str, Sequence[float | None]]) -> bool:
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


def stays_off(
    widths: Sequence[float], gaps: Mapping[str, Sequence[float | None]], *, floor: float = GAP_FLOOR
) -> Verdict:
    """The PC–BP gap s − 1 stays O(1) however wide the network (SP, NTP;
    docs/background.md §4.5): yes when every group's gap at the widest width is at
    least `floor`.

    **Arguments:** `widths` and `gaps` (group label → s − 1 per width), as for
    `scales_like_power`; `floor`.
    """
    claim = "s − 1 stays O(1) at every width, so PC ≠ BP however wide"
    axis, problem = _axis(widths, claim, "N")
    if problem:
        return problem
    assert axis is not None  # `_axis` gives either the axis or the problem
    series, reason = _series(gaps, axis.size, "s − 1")
    last = {label: a[-1] for label, a in series.items()}
    listed = ", ".join(_g(v) + ("" if len(last) == 1 else f" ({label})") for label, v in last.items())
    text = f"s − 1 = {listed} at N = {_x(axis[-1])} (O(1) means ≥ {floor:g})" if last else ""
    return _conclude(claim, None if all(v >= floor for v in last.values()) else text, reason, text)


# ----------------------------------------------------------------- inference


def reaches_closed_form(
    errors: Mapping[str, Sequence[float] | np.ndarray],
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
    label = max(found, key=found.__getitem__)
    text = (f"largest |F − F*|/F* of a converged solve {_g(found[label])} ({label}; {len(found)} runs with "
            f"converged solves; reaching means ≤ {tolerance:g})")
    return _conclude(claim, None if found[label] <= tolerance else text, reason, text)


def off_closed_form(
    errors: Mapping[int, Sequence[float] | np.ndarray],
    *,
    claim: str,
    floor: float = OFF_CLOSED_FORM,
    compare: Mapping[int, Sequence[float] | np.ndarray] | None = None,
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
