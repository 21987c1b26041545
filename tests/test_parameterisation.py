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
# each written from the tables of docs/background.md §3.1.
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


def test_bad_shapes_are_rejected(unchecked):
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


# ---------------------------------------------------------------- CNN (docs/background.md §3.3)
C, LEFF = 16, 7  # channels and the ResNet's effective depth n_res + 4
CNN = NetworkShape(width=C, depth=LEFF, residual=True)
TANH_GAIN = 5 / 3


def test_cnn_multipliers_follow_the_resnet_table():
    preset = pc.MuPC()
    first = preset.scaling(WeightRole(Role.INPUT, fan_in=3 * 9), CNN)
    stage = preset.scaling(WeightRole(Role.HIDDEN, fan_in=9 * C), CNN)
    block = preset.scaling(WeightRole(Role.HIDDEN, fan_in=9 * C, branch=True, gain=TANH_GAIN), CNN)
    readout = preset.scaling(WeightRole(Role.OUTPUT, fan_in=16 * C), CNN)
    assert first.multiplier == pytest.approx(1 / math.sqrt(27))
    assert stage.multiplier == pytest.approx(1 / math.sqrt(9 * C))
    assert block.multiplier == pytest.approx(TANH_GAIN / math.sqrt(9 * C) / math.sqrt(LEFF))
    assert readout.multiplier == pytest.approx(1 / (16 * C))
    # SP ignores the gain: default init, multiplier 1.
    sp_block = pc.SP().scaling(WeightRole(Role.HIDDEN, fan_in=9 * C, branch=True, gain=TANH_GAIN), CNN)
    assert sp_block.multiplier == 1.0 and sp_block.init_std == pytest.approx(1 / math.sqrt(27 * C))


def test_resnet_reference_adam_rates_are_the_per_group_table():
    # docs/background.md §3.3: first stage conv η, other stage convs and readout η/√C,
    # residual-block convs η/√(C·L_eff).
    preset = pc.MuPC(adam_rule=pc.AdamRule.RESNET_REFERENCE)
    rate = lambda role: preset.scaling(role, CNN).adam_lr_scale  # noqa: E731
    assert rate(WeightRole(Role.INPUT, fan_in=27)) == 1.0
    assert rate(WeightRole(Role.HIDDEN, fan_in=9 * C)) == pytest.approx(1 / math.sqrt(C))
    assert rate(WeightRole(Role.OUTPUT, fan_in=16 * C)) == pytest.approx(1 / math.sqrt(C))
    assert rate(WeightRole(Role.HIDDEN, fan_in=9 * C, branch=True)) == pytest.approx(1 / math.sqrt(C * LEFF))
    # The textbook rule differs only on the readout, which μP gives the base rate.
    per_role = pc.MuPC(adam_rule=pc.AdamRule.PER_ROLE)
    assert per_role.scaling(WeightRole(Role.OUTPUT, fan_in=16 * C), CNN).adam_lr_scale == 1.0
    assert per_role.scaling(WeightRole(Role.HIDDEN, fan_in=9 * C), CNN).adam_lr_scale == pytest.approx(1 / math.sqrt(C))
    # SGD: η·γ0²·C for every layer under μPC.
    assert preset.scaling(WeightRole(Role.HIDDEN, fan_in=9 * C, branch=True), CNN).sgd_lr_scale == C


def test_inner_branch_weights_do_not_carry_the_branch_multiplier():
    inner = WeightRole(Role.HIDDEN, fan_in=N, branch=True, branch_output=False)
    outer = WeightRole(Role.HIDDEN, fan_in=N, branch=True)
    for preset, depth_factor in [(pc.MuPC(), L**-0.5), (pc.CompleteP(), 1 / L), (pc.SP(alpha=1.0), 1 / L)]:
        a_in, a_out = preset.scaling(inner, RES).multiplier, preset.scaling(outer, RES).multiplier
        assert a_out == pytest.approx(a_in * depth_factor)
    assert pc.SP().scaling(outer, RES).multiplier == 1.0  # standard SP: no depth factor


# -------------------------------------------------- transformer (docs/background.md §3.4)
d, NB, S0 = 64, 4, 0.02  # width, number of blocks, σ0
TF = NetworkShape(width=d, depth=NB, residual=True)
EMB = WeightRole(Role.INPUT, fan_in=65, std=S0)
QKV = WeightRole(Role.HIDDEN, fan_in=d, branch=True, branch_output=False, std=S0)
WOUT = WeightRole(Role.HIDDEN, fan_in=d, branch=True, std=S0)
HEAD = WeightRole(Role.OUTPUT, fan_in=d, std=S0)
BLOCK_GAIN = WeightRole(Role.GAIN, fan_in=d, branch=True, std=S0)
FINAL_GAIN = WeightRole(Role.GAIN, fan_in=d, std=S0)

# (role, multiplier, init std, Adam lr, Adam ε, weight decay) from the μPC/CompleteP
# column of §3.4, with the paper's reference init (σ0 for block matrices).
COMPLETEP_ROWS = [
    (EMB, 1.0, S0, 1.0, 1 / d, 1.0),
    (QKV, 1.0, S0, 1 / d, 1 / (d * NB), d),
    (WOUT, 1 / NB, S0, 1 / d, 1 / (d * NB), d),
    (HEAD, 1 / d, S0, 1.0, 1 / d, 1.0),
    (BLOCK_GAIN, 1.0, 0.0, 1.0, 1 / (d * NB), 0.0),
    (FINAL_GAIN, 1.0, 0.0, 1.0, 1 / d, 0.0),
]


@pytest.mark.parametrize("row", COMPLETEP_ROWS, ids=["emb", "qkv", "wout", "head", "block-gain", "final-gain"])
def test_transformer_completep_table(row):
    role, multiplier, std, adam, eps, decay = row
    s = pc.CompleteP(init_std_rule=pc.InitStdRule.REFERENCE).scaling(role, TF)
    assert (s.multiplier, s.init_std, s.adam_lr_scale, s.adam_eps_scale, s.weight_decay_scale) == pytest.approx(
        (multiplier, std, adam, eps, decay), rel=1e-12
    )


def test_transformer_init_std_rules():
    standard = pc.CompleteP()  # InitStdRule.STANDARD: σ0·√(d_0/d)
    assert standard.scaling(QKV, TF).init_std == pytest.approx(S0 / math.sqrt(d))
    assert standard.scaling(EMB, TF).init_std == S0 and standard.scaling(HEAD, TF).init_std == S0
    based = NetworkShape(width=d, depth=NB, residual=True, base_width=16)
    assert standard.scaling(QKV, based).init_std == pytest.approx(S0 / math.sqrt(d / 16))
    assert standard.scaling(WOUT, based).adam_lr_scale == pytest.approx(16 / d)
    # SP reference: σ0/√d, and σ0/√d/√(2·n_b) on branch outputs; GPT-2 standard: σ0, σ0/√(2·n_b).
    sp_ref = pc.SP(alpha=1.0, init_std_rule=pc.InitStdRule.REFERENCE)
    assert sp_ref.scaling(QKV, TF).init_std == pytest.approx(S0 / math.sqrt(d))
    assert sp_ref.scaling(WOUT, TF).init_std == pytest.approx(S0 / math.sqrt(d) / math.sqrt(2 * NB))
    assert pc.SP().scaling(QKV, TF).init_std == S0
    assert pc.SP().scaling(WOUT, TF).init_std == pytest.approx(S0 / math.sqrt(2 * NB))
    # SP: one rate, one ε, κ everywhere; head multiplier 1/γ0, branch output 1/n_b with alpha=1.
    for role in (EMB, QKV, WOUT, HEAD, BLOCK_GAIN):
        s = sp_ref.scaling(role, TF)
        assert (s.adam_lr_scale, s.adam_eps_scale, s.weight_decay_scale) == (1.0, 1.0, 1.0)
    assert sp_ref.scaling(WOUT, TF).multiplier == pytest.approx(1 / NB)
    assert pc.SP(gamma0=G).scaling(HEAD, TF).multiplier == pytest.approx(1 / G)


def test_transformer_depth_factors_for_a_general_alpha():
    # Block matrices: Adam η·L^(α−1)/m, ε/(m·L^α), multiplier L^(−α) on branch outputs.
    s = pc.MuPC().scaling(WOUT, TF)
    assert s.adam_lr_scale == pytest.approx(NB**-0.5 / d)
    assert s.adam_eps_scale == pytest.approx(1 / (d * NB**0.5))
    assert s.multiplier == pytest.approx(NB**-0.5)


def test_new_role_fields_are_validated(unchecked):
    with pytest.raises(ValueError, match="gain.*got 0"):
        WeightRole(Role.HIDDEN, fan_in=4, gain=0)
    with pytest.raises(ValueError, match="std.*got -1"):
        WeightRole(Role.HIDDEN, fan_in=4, std=-1)
    with pytest.raises(ValueError, match="base_width.*got 0"):
        NetworkShape(width=4, depth=2, base_width=0)
    with pytest.raises(TypeError, match="init_std_rule"):
        pc.CompleteP(init_std_rule="reference")
    with pytest.raises(ValueError, match="alpha"):
        pc.SP(alpha=2.0)
    # Vectors of a branch (its LayerNorm gains) may sit in the branch.
    assert WeightRole(Role.GAIN, fan_in=4, branch=True).branch
