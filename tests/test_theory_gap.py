"""The rescaling at initialisation: predicted gaps (docs/background.md §4.4–4.5), Monte-Carlo
checks, and S → I as the width grows under μPC but not under SP."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pcscale as pc
from pcscale import theory


def _model(width, depth, *, skips, parameterisation, output_dim=1, seed=0):
    builder = pc.nn.residual_mlp if skips else pc.nn.mlp
    return builder(2, width, output_dim, depth, parameterisation=parameterisation, activation="linear",
                   dtype=jnp.float64, key=jax.random.PRNGKey(seed))


# The formulas of docs/background.md §4.4–4.5, written out by hand.
def _mup_no_skips(N, L, g):
    return (L - 1) / (g**2 * N)


def _mup_skips(N, L, g, alpha):
    return L ** (2 * alpha) * ((1 + L ** (-2 * alpha)) ** (L - 1) - 1) / (g**2 * N)


CASES = [
    (pc.MuPC(gamma0=0.7), False, lambda N, L: _mup_no_skips(N, L, 0.7)),
    (pc.MuP(), False, lambda N, L: _mup_no_skips(N, L, 1.0)),
    (pc.CompleteP(gamma0=2.0), False, lambda N, L: _mup_no_skips(N, L, 2.0)),
    (pc.MuPC(gamma0=0.7), True, lambda N, L: L * ((1 + 1 / L) ** (L - 1) - 1) / (0.49 * N)),
    (pc.CompleteP(gamma0=2.0), True, lambda N, L: L**2 * ((1 + 1 / L**2) ** (L - 1) - 1) / (4 * N)),
    (pc.DepthMuP(alpha=0.75), True, lambda N, L: _mup_skips(N, L, 1.0, 0.75)),
    (pc.MuP(), True, lambda N, L: (2 ** (L - 1) - 1) / N),  # no depth factor: branches of size 1/√N
    (pc.NTP(gamma0=0.5), False, lambda N, L: (L - 1) / 0.25),
    (pc.NTP(), True, lambda N, L: L * ((1 + 1 / L) ** (L - 1) - 1)),
    (pc.SP(gamma0=2.0), False, lambda N, L: (1 - 3.0 ** (-(L - 1))) / (2 * 4.0)),
    (pc.SP(), True, lambda N, L: (4 / 3) ** (L - 1) - 1),
]


@pytest.mark.parametrize("parameterisation, skips, formula", CASES)
def test_predicted_gap_matches_the_closed_forms(parameterisation, skips, formula):
    for width, depth in [(8, 3), (64, 5), (2048, 32), (100, 17)]:
        assert math.isclose(theory.predicted_gap(width, depth, parameterisation, skips=skips), formula(width, depth),
                            rel_tol=1e-12)
    # With L = 2 there is no hidden-to-hidden map, so skips change nothing.
    assert theory.predicted_gap(16, 2, parameterisation, skips=skips) == theory.predicted_gap(
        16, 2, parameterisation, skips=False)


def test_quoted_values_of_the_science_reference():
    # docs/background.md §5.2: s(θ_0) − 1 ≈ 2.6e-3 (skips) and 1.95e-3 (no skips) at N = 2048, L = 5.
    assert abs(theory.predicted_gap(2048, 5, pc.MuPC(), skips=True) - 2.6e-3) < 0.05e-3
    assert abs(theory.predicted_gap(2048, 5, pc.MuPC(), skips=False) - 1.95e-3) < 0.01e-3
    # §5.3: SP at L = 5: ≈ 0.49 without skips, ≈ 2.2 with.
    assert abs(theory.predicted_gap(2048, 5, pc.SP(), skips=False) - 0.49) < 0.01
    assert abs(theory.predicted_gap(2048, 5, pc.SP(), skips=True) - 2.16) < 0.01


# The deep and wide case (L = 16, N = 512: 50 draws of sixteen 512 × 512 matrices) runs
# with -m slow; the default run keeps depth 16 at N = 128 and N = 512 at depth 4.
@pytest.mark.parametrize("width, depth", [(128, 4), (512, 4), (128, 16), pytest.param(512, 16, marks=pytest.mark.slow)])
@pytest.mark.parametrize("skips", [False, True])
def test_monte_carlo_mean_gap_matches_the_prediction(width, depth, skips):
    draws = [float(theory.rescaling(_model(width, depth, skips=skips, parameterisation=pc.MuPC(), seed=s)).gram[0, 0])
             for s in range(50)]
    predicted = theory.predicted_gap(width, depth, pc.MuPC(), skips=skips)
    assert abs(np.mean(draws) / predicted - 1) < 0.10


def _spectral_gaps(parameterisation, widths, *, output_dim, seeds):
    return [np.mean([float(theory.rescaling(_model(w, 8, skips=True, parameterisation=parameterisation,
                                                   output_dim=output_dim, seed=s)).spectral_gap)
                     for s in range(seeds)])
            for w in widths]


def test_rescaling_tends_to_identity_like_one_over_width_under_mupc():
    # d_y = 1, so ‖S‖₂ − 1 = s − 1 with no random-matrix factor (with d_y = 10 the factor
    # (1 + √(d_y/N))², large at N = 64, steepens the fitted slope to about −1.17).
    widths = [64, 128, 256, 512, 1024]
    gaps = _spectral_gaps(pc.MuPC(), widths, output_dim=1, seeds=5)
    slope = np.polyfit(np.log(widths), np.log(gaps), 1)[0]
    assert -1.2 < slope < -0.8


def test_rescaling_does_not_tend_to_identity_under_sp():
    # ‖S‖₂ − 1 exceeds the trace gap by a random-matrix factor that fades with N, but
    # it levels off at the width-independent prediction [(4/3)^(L−1) − 1] ≈ 6.5 instead
    # of falling like 1/N (which would give a 16-fold drop from N = 64 to N = 1024).
    widths = [64, 256, 1024]
    gaps = _spectral_gaps(pc.SP(), widths, output_dim=10, seeds=3)
    floor = theory.predicted_gap(64, 8, pc.SP(), skips=True)
    assert math.isclose(floor, (4 / 3) ** 7 - 1)
    assert min(gaps) > 0.95 * floor
    assert gaps[-1] > 0.5 * gaps[0]


def test_predicted_gap_bad_input(unchecked):
    with pytest.raises(ValueError, match="`width` must be a positive integer"):
        theory.predicted_gap(0, 4, pc.MuPC(), skips=True)
    with pytest.raises(ValueError, match="`depth`"):
        theory.predicted_gap(8, 2.5, pc.MuPC(), skips=True)
    with pytest.raises(TypeError, match="`parameterisation`"):
        theory.predicted_gap(8, 4, "mupc", skips=True)
    with pytest.raises(TypeError, match="`skips` must be True or False"):
        theory.predicted_gap(8, 4, pc.MuPC(), skips="False")
