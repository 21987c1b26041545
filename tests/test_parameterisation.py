import math

import pytest

import pcscale as pc
from pcscale import Init, NetworkShape, Role, WeightRole

D, N, L, G = 20, 64, 8, 2.0  # input dim, width, depth, gamma0 (≠ 1 to expose 1/γ0)
RES = NetworkShape(width=N, depth=L, residual=True)
PLAIN = NetworkShape(width=N, depth=L, residual=False)

INPUT = WeightRole(Role.INPUT, fan_in=D)
HIDDEN = WeightRole(Role.HIDDEN, fan_in=N)
BRANCH = WeightRole(Role.HIDDEN, fan_in=N, branch=True)
OUTPUT = WeightRole(Role.OUTPUT, fan_in=N)

# (preset, role, shape) -> (multiplier, init, init_std, sgd lr scale, adam lr scale),
# each written from the tables of science.md §3.1.
ROWS = [
    # SP: default uniform init, multipliers 1 (1/γ0 on the readout), rate η everywhere.
    ("SP", pc.SP(gamma0=G), INPUT, RES, 1.0, Init.UNIFORM, 1 / math.sqrt(3 * D), 1.0, 1.0),
    ("SP", pc.SP(gamma0=G), BRANCH, RES, 1.0, Init.UNIFORM, 1 / math.sqrt(3 * N), 1.0, 1.0),
    ("SP", pc.SP(gamma0=G), HIDDEN, PLAIN, 1.0, Init.UNIFORM, 1 / math.sqrt(3 * N), 1.0, 1.0),
    ("SP", pc.SP(gamma0=G), OUTPUT, RES, 1 / G, Init.UNIFORM, 1 / math.sqrt(3 * N), 1.0, 1.0),
    # NTP: N(0,1), 1/√fan_in, 1/√(N·L) on branches, 1/(γ0·√N) readout, rate η.
    ("NTP", pc.NTP(gamma0=G), INPUT, RES, 1 / math.sqrt(D), Init.NORMAL, 1.0, 1.0, 1.0),
    ("NTP", pc.NTP(gamma0=G), HIDDEN, PLAIN, 1 / math.sqrt(N), Init.NORMAL, 1.0, 1.0, 1.0),
    ("NTP", pc.NTP(gamma0=G), BRANCH, RES, 1 / math.sqrt(N * L), Init.NORMAL, 1.0, 1.0, 1.0),
    ("NTP", pc.NTP(gamma0=G), OUTPUT, RES, 1 / (G * math.sqrt(N)), Init.NORMAL, 1.0, 1.0, 1.0),
    # μP: no depth factor; SGD η·γ0²·N; Adam η/√N.
    ("MuP", pc.MuP(gamma0=G), INPUT, RES, 1 / math.sqrt(D), Init.NORMAL, 1.0, G**2 * N, 1 / math.sqrt(N)),
    ("MuP", pc.MuP(gamma0=G), HIDDEN, PLAIN, 1 / math.sqrt(N), Init.NORMAL, 1.0, G**2 * N, 1 / math.sqrt(N)),
    ("MuP", pc.MuP(gamma0=G), BRANCH, RES, 1 / math.sqrt(N), Init.NORMAL, 1.0, G**2 * N, 1 / math.sqrt(N)),
    ("MuP", pc.MuP(gamma0=G), OUTPUT, RES, 1 / (G * N), Init.NORMAL, 1.0, G**2 * N, 1 / math.sqrt(N)),
    # μPC (α = 1/2): branch 1/√(N·L); SGD η·γ0²·N; Adam η/√(N·L) with skips, η/√N without.
    ("MuPC", pc.MuPC(gamma0=G), INPUT, RES, 1 / math.sqrt(D), Init.NORMAL, 1.0, G**2 * N, 1 / math.sqrt(N * L)),
    ("MuPC", pc.MuPC(gamma0=G), BRANCH, RES, 1 / math.sqrt(N * L), Init.NORMAL, 1.0, G**2 * N, 1 / math.sqrt(N * L)),
    ("MuPC", pc.MuPC(gamma0=G), OUTPUT, RES, 1 / (G * N), Init.NORMAL, 1.0, G**2 * N, 1 / math.sqrt(N * L)),
    ("MuPC", pc.MuPC(gamma0=G), HIDDEN, PLAIN, 1 / math.sqrt(N), Init.NORMAL, 1.0, G**2 * N, 1 / math.sqrt(N)),
    ("MuPC", pc.MuPC(gamma0=G), OUTPUT, PLAIN, 1 / (G * N), Init.NORMAL, 1.0, G**2 * N, 1 / math.sqrt(N)),
    # CompleteP (α = 1): branch 1/(√N·L); SGD η·γ0²·N·L; Adam η/√N.
    ("CompleteP", pc.CompleteP(gamma0=G), INPUT, RES, 1 / math.sqrt(D), Init.NORMAL, 1.0, G**2 * N * L, 1 / math.sqrt(N)),
    ("CompleteP", pc.CompleteP(gamma0=G), BRANCH, RES, 1 / (math.sqrt(N) * L), Init.NORMAL, 1.0, G**2 * N * L, 1 / math.sqrt(N)),
    ("CompleteP", pc.CompleteP(gamma0=G), OUTPUT, RES, 1 / (G * N), Init.NORMAL, 1.0, G**2 * N * L, 1 / math.sqrt(N)),
    # Without residual branches there is no depth factor [D]: CompleteP is μP.
    ("CompleteP", pc.CompleteP(gamma0=G), HIDDEN, PLAIN, 1 / math.sqrt(N), Init.NORMAL, 1.0, G**2 * N, 1 / math.sqrt(N)),
    # general α = 0.75: branch L^(−α)/√N; SGD η·γ0²·N·L^(2α−1); Adam η·L^(α−1)/√N.
    ("alpha=0.75", pc.DepthMuP(alpha=0.75, gamma0=G), INPUT, RES, 1 / math.sqrt(D), Init.NORMAL, 1.0,
     G**2 * N * L**0.5, L**-0.25 / math.sqrt(N)),
    ("alpha=0.75", pc.DepthMuP(alpha=0.75, gamma0=G), BRANCH, RES, L**-0.75 / math.sqrt(N), Init.NORMAL, 1.0,
     G**2 * N * L**0.5, L**-0.25 / math.sqrt(N)),
    ("alpha=0.75", pc.DepthMuP(alpha=0.75, gamma0=G), OUTPUT, RES, 1 / (G * N), Init.NORMAL, 1.0,
     G**2 * N * L**0.5, L**-0.25 / math.sqrt(N)),
    ("alpha=0.75", pc.DepthMuP(alpha=0.75, gamma0=G), HIDDEN, PLAIN, 1 / math.sqrt(N), Init.NORMAL, 1.0,
     G**2 * N, 1 / math.sqrt(N)),
]


@pytest.mark.parametrize(
    "name, preset, role, shape, multiplier, init, init_std, sgd, adam",
    ROWS,
    ids=[f"{r[0]}-{r[2].kind.value}{'-branch' if r[2].branch else ''}-{'res' if r[3].residual else 'plain'}" for r in ROWS],
)
def test_preset_table(name, preset, role, shape, multiplier, init, init_std, sgd, adam):
    scaling = preset.scaling(role, shape)
    assert scaling.multiplier == pytest.approx(multiplier, rel=1e-12)
    assert scaling.init is init
    assert scaling.init_std == pytest.approx(init_std, rel=1e-12)
    assert scaling.sgd_lr_scale == pytest.approx(sgd, rel=1e-12)
    assert scaling.adam_lr_scale == pytest.approx(adam, rel=1e-12)
    # MLP presets: no ε scaling; matrices decay at the base rate.
    assert scaling.adam_eps_scale == 1.0 and scaling.weight_decay_scale == 1.0


def test_per_role_adam_rule():
    preset = pc.MuPC(adam_rule=pc.AdamRule.PER_ROLE)
    assert preset.scaling(INPUT, RES).adam_lr_scale == 1.0
    assert preset.scaling(OUTPUT, RES).adam_lr_scale == 1.0
    assert preset.scaling(BRANCH, RES).adam_lr_scale == pytest.approx(1 / math.sqrt(N * L))


@pytest.mark.parametrize("preset", [pc.SP(), pc.NTP(), pc.MuP(), pc.MuPC(), pc.CompleteP()])
def test_biases_start_at_zero_and_gains_at_one_without_decay(preset):
    bias = preset.scaling(WeightRole(Role.VECTOR, fan_in=N), RES)
    gain = preset.scaling(WeightRole(Role.GAIN, fan_in=N), RES)
    assert bias.init is Init.ZEROS and gain.init is Init.ONES
    assert bias.weight_decay_scale == gain.weight_decay_scale == 0.0
    assert bias.multiplier == gain.multiplier == 1.0
    # Vectors share the global SGD rule of the preset.
    assert bias.sgd_lr_scale == preset.scaling(INPUT, RES).sgd_lr_scale


def test_attention_logit_scale():
    assert pc.SP().attention_logit_scale(16) == pytest.approx(0.25)
    assert pc.MuPC().attention_logit_scale(16) == pytest.approx(1 / 16)


def test_uniform_init_has_the_default_bound():
    import jax

    scaling = pc.SP().scaling(INPUT, RES)
    w = scaling.sample((4000, D), "float64", key=jax.random.PRNGKey(0))
    assert float(abs(w).max()) <= 1 / math.sqrt(D)
    assert float(abs(w).max()) > 0.99 / math.sqrt(D)
    assert float(w.std()) == pytest.approx(1 / math.sqrt(3 * D), rel=0.02)


@pytest.mark.parametrize("alpha", [0.4, 1.1, -1.0, True, "0.5"])
def test_alpha_outside_range_is_rejected(alpha):
    with pytest.raises(ValueError, match=r"alpha.*\[1/2, 1\].*got"):
        pc.DepthMuP(alpha=alpha)


@pytest.mark.parametrize("gamma0", [0.0, -1.0, float("nan")])
def test_bad_gamma0_is_rejected(gamma0):
    with pytest.raises(ValueError, match="gamma0"):
        pc.MuPC(gamma0=gamma0)


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="width.*got 0"):
        NetworkShape(width=0, depth=3)
    with pytest.raises(ValueError, match="depth.*got 0"):
        NetworkShape(width=4, depth=0)
    with pytest.raises(ValueError, match="branch"):
        WeightRole(Role.OUTPUT, fan_in=3, branch=True)
    with pytest.raises(ValueError, match="fan_in.*got 2.5"):
        WeightRole(Role.HIDDEN, fan_in=2.5)


def test_numpy_scalars_are_accepted():
    import numpy as np

    assert pc.DepthMuP(alpha=np.float32(0.5)).scaling(BRANCH, RES).multiplier == pytest.approx(1 / math.sqrt(N * L))
