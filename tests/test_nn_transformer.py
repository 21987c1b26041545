"""The decoder-only transformer of docs/background.md §3.4 against a hand-written batched forward.

The expectations are written from §3.4 (and §3.5 for the init rules) as closed forms:
embedding wte[x] + wpe[t]; n_b blocks x ← x + m·Attn(LN₁(x)), x ← x + m·MLP(LN₂(x)),
causal softmax attention with a fused W_qkv split into q, k, v, heads as contiguous
chunks of d_h, logits times 1/d_h (CompleteP) or 1/√d_h (SP); an exact-GELU MLP
d → 4d → d; no biases; final LN or identity; LM head times 1/d (CompleteP) or 1 (SP).
Only raw weights are read from the model.
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import cross_entropy

import pcscale as pc

V, D, HEADS, BLOCKS, T, BATCH, MAX_LEN = 7, 8, 2, 2, 5, 3, 6
HIGHEST = jax.lax.Precision.HIGHEST

# name: (parameterisation factory, branch multiplier m, logit scale, head multiplier),
# the last three as closed forms of §3.4 for d = D, n_h = HEADS, n_b = BLOCKS.
PRESETS = {
    "completep": (pc.CompleteP, 1.0 / BLOCKS, 1.0 / (D // HEADS), 1.0 / D),
    "sp-alpha1": (lambda: pc.SP(alpha=1.0), 1.0 / BLOCKS, 1.0 / math.sqrt(D // HEADS), 1.0),
    "sp": (pc.SP, 1.0, 1.0 / math.sqrt(D // HEADS), 1.0),
}

try:  # the exception a failed error_if raises inside jax.jit, by JAX version
    _JIT_RUNTIME_ERRORS = (eqx.EquinoxRuntimeError, jax.errors.JaxRuntimeError)
except AttributeError:  # pragma: no cover - older JAX
    from jax.errors import XlaRuntimeError

    _JIT_RUNTIME_ERRORS = (eqx.EquinoxRuntimeError, XlaRuntimeError)


# ----------------------------------------------------------------- hand-written network
def mm(a, b):
    return jnp.matmul(a, b, precision=HIGHEST)


# The hand-written network broadcasts gains and positions NumPy-style; the test run
# otherwise forbids implicit rank promotion (tests/conftest.py), for pcscale's code.
HAND_WRITTEN = jax.numpy_rank_promotion("allow")


@HAND_WRITTEN
def layer_norm(z, gain):
    centred = z - jnp.mean(z, axis=-1, keepdims=True)
    return gain * centred / jnp.sqrt(jnp.mean(centred**2, axis=-1, keepdims=True) + 1e-5)


def attention(h, w_qkv, w_out, logit_scale):
    b, t, d = h.shape
    dh = d // HEADS
    qkv = mm(h, w_qkv.T)
    q, k, v = (qkv[..., i * d : (i + 1) * d].reshape(b, t, HEADS, dh) for i in range(3))
    logits = jnp.einsum("bqhc,bkhc->bhqk", q, k, precision=HIGHEST) * logit_scale
    causal = jnp.arange(t)[:, None] >= jnp.arange(t)[None, :]
    logits = jnp.where(causal, logits, -jnp.inf)
    weights = jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True))
    weights = weights / jnp.sum(weights, axis=-1, keepdims=True)
    out = jnp.einsum("bhqk,bkhc->bqhc", weights, v, precision=HIGHEST).reshape(b, t, d)
    return mm(out, w_out.T)


def mlp(h, w1, w2):
    return mm(jax.nn.gelu(mm(h, w1.T), approximate=False), w2.T)


@HAND_WRITTEN
def hand_forward(p, tokens, *, branch, logit_scale, head, layer_norm_on):
    """Returns the activities (embedding, each block, final norm) and the logits."""
    x = p["wte"][tokens] + p["wpe"][None, : tokens.shape[1]]
    activities = [x]
    for blk in p["blocks"]:
        h = layer_norm(x, blk["ln1"]) if layer_norm_on else x
        x = x + branch * attention(h, blk["w_qkv"], blk["w_out"], logit_scale)
        h = layer_norm(x, blk["ln2"]) if layer_norm_on else x
        x = x + branch * mlp(h, blk["w1"], blk["w2"])
        activities.append(x)
    x = layer_norm(x, p["ln_f"]) if layer_norm_on else x
    activities.append(x)
    return activities, head * mm(x, p["head"].T)


def hand_loss(p, tokens, y, **kwargs):
    """Token-summed cross-entropy, batch mean."""
    logits = hand_forward(p, tokens, **kwargs)[1]
    return jnp.mean(jnp.sum(cross_entropy(logits, y), axis=-1))


def raw_params(model, layer_norm_on):
    """The raw weights of a built transformer (or of a gradient with its structure)."""
    embedding = model.layers[0].module
    blocks = []
    for layer in model.layers[1 : 1 + BLOCKS]:
        branch = layer.module.module
        blk = dict(w_qkv=branch.w_qkv, w_out=branch.w_out, w1=branch.w1, w2=branch.w2)
        if layer_norm_on:
            blk.update(ln1=branch.ln1.gain, ln2=branch.ln2.gain)
        blocks.append(blk)
    p = dict(wte=embedding.tokens, wpe=embedding.positions, blocks=blocks, head=model.layers[-1].module.weight)
    if layer_norm_on:
        p["ln_f"] = model.layers[-2].module.module.gain
    return p


def build(preset, *, layer_norm_on=False, softmax=True, dtype=jnp.float32, precision=1.0, seed=0):
    return pc.nn.transformer(
        V, D, HEADS, BLOCKS, max_len=MAX_LEN, layer_norm=layer_norm_on, softmax=softmax,
        parameterisation=PRESETS[preset][0](), output_precision=precision, dtype=dtype,
        key=jax.random.PRNGKey(seed),
    )


def redraw(model, seed):
    """The same model with O(1) raw weights (matrices 0.5·N(0,1), vectors 1 + 0.2·N(0,1)),
    so that attention is far from uniform and the logit scale matters."""
    params, static = eqx.partition(model, eqx.is_array)
    leaves, treedef = jax.tree.flatten(params)
    rng = np.random.default_rng(seed)
    new = [
        jnp.asarray((0.5 * rng.standard_normal(w.shape)) if w.ndim >= 2 else 1.0 + 0.2 * rng.standard_normal(w.shape),
                    w.dtype)
        for w in leaves
    ]
    return eqx.combine(jax.tree.unflatten(treedef, new), static)


def tokens_and_targets(seed, dtype, batch=BATCH, length=T):
    rng = np.random.default_rng(seed)
    tokens = jnp.asarray(rng.integers(0, V, (batch, length)), jnp.int32)
    y = jnp.asarray(np.eye(V)[rng.integers(0, V, (batch, length))], dtype)
    return tokens, y


def hand_kwargs(preset, layer_norm_on):
    _, branch, logit_scale, head = PRESETS[preset]
    return dict(branch=branch, logit_scale=logit_scale, head=head, layer_norm_on=layer_norm_on)


def assert_close32(actual, expected):
    scale = max(1.0, float(jnp.max(jnp.abs(expected))))
    np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-6 * scale)


# ------------------------------------------------------------------------------ tests
# Three default cases cover every preset, LayerNorm on and off and both inits; the rest
# of the product runs with -m slow.
DEFAULT_FORWARD = {("completep", False, True), ("sp-alpha1", True, True), ("sp", False, False)}
FORWARD_CASES = [
    pytest.param(p, ln, r, marks=() if (p, ln, r) in DEFAULT_FORWARD else pytest.mark.slow)
    for p in PRESETS for ln in (False, True) for r in (False, True)
]


@pytest.mark.parametrize("preset, layer_norm_on, redrawn", FORWARD_CASES)
def test_forward_matches_hand_written_transformer(preset, layer_norm_on, redrawn):
    model = build(preset, layer_norm_on=layer_norm_on)
    if redrawn:
        model = redraw(model, seed=10)
    tokens, _ = tokens_and_targets(1, jnp.float32)
    activities, expected = hand_forward(raw_params(model, layer_norm_on), tokens, **hand_kwargs(preset, layer_norm_on))

    out = model(tokens)
    assert out.dtype == jnp.float32 and out.shape == (BATCH, T, V)
    assert_close32(out, expected)

    z = model.init_activities(tokens)
    assert len(z) == BLOCKS + 2
    for z_l, h_l in zip(z, activities):
        assert z_l.shape == (BATCH, T, D)
        assert_close32(z_l, h_l)


def test_redrawn_weights_make_the_logit_scale_matter():
    """Guard for the test above: with O(1) weights, the CompleteP and SP logit scales give
    different outputs, so the forward test does check the logit scale."""
    model = redraw(build("completep"), seed=10)
    tokens, _ = tokens_and_targets(1, jnp.float32)
    kwargs = hand_kwargs("completep", False)
    p = raw_params(model, False)
    _, with_completep_scale = hand_forward(p, tokens, **kwargs)
    _, with_sp_scale = hand_forward(p, tokens, **{**kwargs, "logit_scale": 1 / math.sqrt(D // HEADS)})
    assert float(jnp.max(jnp.abs(with_completep_scale - with_sp_scale))) > 1e-3


@pytest.mark.parametrize("layer_norm_on", [False, True])
@pytest.mark.parametrize("precision", [1.0, 0.3])
def test_feedforward_state_has_zero_errors_and_energy_is_lambda_times_summed_ce(layer_norm_on, precision):
    # float32 (the forward test's compiled operations are reused: float64 would double
    # this file's compile time); the loss is a 1e-6-accurate function of the logits.
    model = redraw(build("completep", layer_norm_on=layer_norm_on, precision=precision), 11)
    tokens, y = tokens_and_targets(2, jnp.float32)
    z = model.init_activities(tokens)
    assert len(z) == BLOCKS + 2 and all(z_l.shape == (BATCH, T, D) for z_l in z)
    for error in model.errors(z, tokens):
        assert float(jnp.max(jnp.abs(error))) == 0.0
    loss = hand_loss(raw_params(model, layer_norm_on), tokens, y, **hand_kwargs("completep", layer_norm_on))
    assert model.energy(z, tokens, y).dtype == jnp.float32
    np.testing.assert_allclose(model.loss(tokens, y), loss, rtol=1e-5)
    np.testing.assert_allclose(model.energy(z, tokens, y), precision * loss, rtol=1e-5)


@pytest.mark.parametrize("softmax, layer_norm_on", [(True, False), (True, True), (False, False)])
def test_attention_is_causal(softmax, layer_norm_on):
    model = redraw(build("completep", layer_norm_on=layer_norm_on, softmax=softmax), seed=12)
    tokens, _ = tokens_and_targets(3, jnp.float32)
    base = model(tokens)
    scale = max(1.0, float(jnp.max(jnp.abs(base))))
    for t in range(T - 1):
        # Change every token after position t (to a different id).
        changed = tokens.at[:, t + 1 :].set((tokens[:, t + 1 :] + 3) % V)
        out = model(changed)
        np.testing.assert_allclose(out[:, : t + 1], base[:, : t + 1], rtol=0, atol=1e-6 * scale)
        assert float(jnp.min(jnp.max(jnp.abs(out[:, t + 1] - base[:, t + 1]), axis=-1))) > 1e-3
    # And the attention does mix positions: changing only the first token changes the
    # output at every later position.
    first = model(tokens.at[:, 0].set((tokens[:, 0] + 3) % V))
    for t in range(1, T):
        assert float(jnp.min(jnp.max(jnp.abs(first[:, t] - base[:, t]), axis=-1))) > 1e-5


@pytest.mark.parametrize(
    "layer_norm_on, std",
    # With LayerNorms, σ0 = 0.5 keeps the activities O(1): LN of σ0 = 0.02 activities has
    # a Jacobian ≈ 1/0.03, which makes plain GD inference unstable (and the float64
    # residual floor ≈ 1e-8 of its initial value).
    [(False, 0.02), (True, 0.5)],
    ids=["identity-norm", "layer-norm"],
)
def test_pc_gradient_at_equilibrium_matches_hand_bp_gradient(layer_norm_on, std):
    lam = 1e-4
    model = pc.nn.transformer(
        V, D, HEADS, BLOCKS, max_len=MAX_LEN, layer_norm=layer_norm_on, std=std, parameterisation=pc.CompleteP(),
        output_precision=lam, dtype=jnp.float64, key=jax.random.PRNGKey(4),
    )
    solver = pc.GradientDescent(step_size=0.2, rtol=1e-9, max_steps=20_000)
    tokens, y = tokens_and_targets(4, jnp.float64)

    sol = pc.infer(model, tokens, y, solver=solver)
    assert bool(sol.stats.result == pc.RESULTS.converged), sol.stats
    assert float(sol.stats.relative_residual) <= solver.rtol

    # jit only to keep the test fast on CPU.
    _, pc_grads = eqx.filter_jit(pc.pc_gradients)(model, sol.activities, tokens, y)
    kwargs = hand_kwargs("completep", layer_norm_on)
    bp_grads = jax.jit(jax.grad(lambda p: hand_loss(p, tokens, y, **kwargs)))(raw_params(model, layer_norm_on))
    pc_leaves = jax.tree.leaves(raw_params(pc_grads, layer_norm_on))
    bp_leaves = jax.tree.leaves(bp_grads)
    # Nothing in the model has parameters beyond those written by hand.
    assert len(jax.tree.leaves(eqx.filter(pc_grads, eqx.is_array))) == len(pc_leaves) == len(bp_leaves)
    pc_flat = jnp.concatenate([g.ravel() for g in pc_leaves])
    bp_flat = jnp.concatenate([g.ravel() for g in bp_leaves])

    cosine = float(pc_flat @ bp_flat / (jnp.linalg.norm(pc_flat) * jnp.linalg.norm(bp_flat)))
    assert cosine > 0.999, cosine
    # For small λ the equilibrated energy is λ·𝓛 + O(λ²): the PC gradient is λ times
    # the (token-summed) BP gradient.
    ratio = float(jnp.linalg.norm(pc_flat) / (lam * jnp.linalg.norm(bp_flat)))
    assert abs(ratio - 1.0) < 1e-2, ratio


# --------------------------------------------------------------------- init statistics
SIGMA0, D_WIDE, BLOCKS_WIDE = 0.02, 64, 2
_SMALL = SIGMA0 / math.sqrt(D_WIDE)


@pytest.mark.parametrize(
    "parameterisation, stds",
    [
        # CompleteP, σ0·√(d_0/d) for every block matrix (§3.5, `completep` rule).
        (pc.CompleteP(), dict(w_qkv=_SMALL, w1=_SMALL, w_out=_SMALL, w2=_SMALL)),
        # The paper's μPC column: a width-independent σ0.
        (pc.CompleteP(init_std_rule=pc.InitStdRule.REFERENCE),
         dict(w_qkv=SIGMA0, w1=SIGMA0, w_out=SIGMA0, w2=SIGMA0)),
        # The paper's SP column: σ0/√d, and σ0/√d/√(2·n_b) on the output projections.
        (pc.SP(alpha=1.0, init_std_rule=pc.InitStdRule.REFERENCE),
         dict(w_qkv=_SMALL, w1=_SMALL, w_out=_SMALL / math.sqrt(2 * BLOCKS_WIDE),
              w2=_SMALL / math.sqrt(2 * BLOCKS_WIDE))),
        # SP's documented STANDARD rule (GPT-2): σ0, and σ0/√(2·n_b) on output projections.
        (pc.SP(), dict(w_qkv=SIGMA0, w1=SIGMA0, w_out=SIGMA0 / math.sqrt(2 * BLOCKS_WIDE),
                       w2=SIGMA0 / math.sqrt(2 * BLOCKS_WIDE))),
    ],
    ids=["completep", "completep-reference", "sp-alpha1-reference", "sp-standard"],
)
def test_init_statistics(parameterisation, stds):
    model = pc.nn.transformer(65, D_WIDE, 4, BLOCKS_WIDE, max_len=32, parameterisation=parameterisation,
                              key=jax.random.PRNGKey(5))
    embedding, head = model.layers[0].module, model.layers[-1].module
    for table in (embedding.tokens, embedding.positions, head.weight):
        np.testing.assert_allclose(np.std(np.asarray(table)), SIGMA0, rtol=0.1)
    for layer in model.layers[1 : 1 + BLOCKS_WIDE]:
        branch = layer.module.module
        for name, std in stds.items():
            w = np.asarray(getattr(branch, name))
            np.testing.assert_allclose(np.std(w), std, rtol=0.1, err_msg=name)
            assert abs(np.mean(w)) < 0.1 * std, name


# ---------------------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def model32():
    return build("completep")


@pytest.mark.parametrize(
    "args, kwargs, name",
    [
        ((V, 8, 3, 2), {}, "n_heads"),
        ((V, 0, 1, 2), {}, "d_model"),
        ((V, 8, 2, 0), {}, "n_blocks"),
        ((0, 8, 2, 2), {}, "vocab_size"),
        ((V, 8, 2, 2), dict(max_len=0), "max_len"),
    ],
)
def test_bad_builder_arguments_are_rejected(args, kwargs, name):
    kwargs = {"max_len": MAX_LEN, **kwargs}
    with pytest.raises(ValueError, match=name):
        pc.nn.transformer(*args, key=jax.random.PRNGKey(0), **kwargs)


def test_sequence_longer_than_max_len_is_rejected(model32):
    tokens = jnp.zeros((2, MAX_LEN + 1), jnp.int32)
    with pytest.raises(ValueError, match="max_len"):
        model32(tokens)
    with pytest.raises(ValueError, match="max_len"):
        jax.jit(lambda t: model32(t))(tokens)
    model32(jnp.zeros((2, MAX_LEN), jnp.int32))  # the full table is fine


@pytest.mark.parametrize("bad", [V, V + 5, -1])
def test_out_of_vocabulary_tokens_are_rejected(model32, bad):
    tokens = jnp.asarray([[0, 1, 2], [3, bad, 4]], jnp.int32)
    with pytest.raises(eqx.EquinoxRuntimeError, match="vocabulary"):
        model32(tokens)
    with pytest.raises(_JIT_RUNTIME_ERRORS, match="vocabulary"):
        jax.jit(lambda t: model32(t))(tokens).block_until_ready()
    # In range is fine, at both ends.
    model32(jnp.asarray([[0, V - 1, 2]], jnp.int32))


def test_float_inputs_are_rejected(model32, unchecked):
    tokens, _ = tokens_and_targets(5, jnp.float32)
    for floats in (tokens.astype(jnp.float32), tokens.astype(jnp.float32) + 0.5):
        with pytest.raises(ValueError, match="integer"):
            model32(floats)
        with pytest.raises(ValueError, match="integer"):
            jax.jit(lambda t: model32(t))(floats)


def test_unbatched_tokens_are_rejected(model32):
    with pytest.raises(ValueError, match="batch"):
        model32(jnp.asarray([0, 1, 2], jnp.int32))


# ------------------------------------------- biases, and the scalings a built model gets
def test_biases_sit_inside_the_scaled_branches():
    # With use_bias, a block is x + m·(Attn(LN₁x) W_out + b_out), then + m·(MLP + b2), with
    # LN(z) = g·normalised(z) + β; every weight and bias redrawn to O(1) values.
    model = redraw(pc.nn.transformer(V, D, HEADS, BLOCKS, max_len=MAX_LEN, layer_norm=True, use_bias=True,
                                     parameterisation=pc.CompleteP(), key=jax.random.PRNGKey(1)), seed=3)
    tokens, _ = tokens_and_targets(4, jnp.float32)
    m, logit_scale, head = 1.0 / BLOCKS, 1.0 / (D // HEADS), 1.0 / D

    @HAND_WRITTEN
    def hand_written(tokens):
        def ln(z, norm):
            return layer_norm(z, norm.gain) + norm.bias

        emb = model.layers[0].module
        x = emb.tokens[tokens] + emb.positions[None, :T]
        dh = D // HEADS
        for layer in model.layers[1 : 1 + BLOCKS]:
            b = layer.module.module
            h = ln(x, b.ln1)
            qkv = mm(h, b.w_qkv.T) + b.b_qkv
            q, k, v = (qkv[..., i * D : (i + 1) * D].reshape(BATCH, T, HEADS, dh) for i in range(3))
            logits = jnp.einsum("bqhc,bkhc->bhqk", q, k, precision=HIGHEST) * logit_scale
            logits = jnp.where(jnp.tril(jnp.ones((T, T), bool)), logits, -jnp.inf)
            o = jnp.einsum("bhqk,bkhc->bqhc", jax.nn.softmax(logits, axis=-1), v, precision=HIGHEST).reshape(BATCH, T, D)
            x = x + m * (mm(o, b.w_out.T) + b.b_out)
            h = ln(x, b.ln2)
            x = x + m * (mm(jax.nn.gelu(mm(h, b.w1.T) + b.b1, approximate=False), b.w2.T) + b.b2)
        x = ln(x, model.layers[-2].module.module)
        return x

    x = hand_written(tokens)
    assert_close32(model(tokens), head * mm(x, model.layers[-1].module.weight.T))


def test_built_model_scalings_follow_the_completep_table():
    # docs/background.md §3.4 with d = D, n_b = BLOCKS, base width 1: (Adam lr, Adam ε, weight
    # decay) per tensor, read from the optimiser-facing pytree of a built model.
    model = pc.nn.transformer(V, D, HEADS, BLOCKS, max_len=MAX_LEN, layer_norm=True, use_bias=True,
                              parameterisation=pc.CompleteP(), key=jax.random.PRNGKey(0))
    scalings = model.parameter_scalings()
    get = lambda s: (s.adam_lr_scale, s.adam_eps_scale, s.weight_decay_scale)  # noqa: E731
    assert get(scalings.layers[0].module.tokens) == pytest.approx((1.0, 1 / D, 1.0))
    assert get(scalings.layers[0].module.positions) == pytest.approx((1.0, 1 / D, 1.0))
    for layer in scalings.layers[1 : 1 + BLOCKS]:
        block = layer.module.module
        for matrix in (block.w_qkv, block.w_out, block.w1, block.w2):
            assert get(matrix) == pytest.approx((1 / D, 1 / (D * BLOCKS), D))
        for vector in (block.ln1.gain, block.ln1.bias, block.ln2.gain, block.b_qkv, block.b_out, block.b1, block.b2):
            assert get(vector) == pytest.approx((1.0, 1 / (D * BLOCKS), 0.0))
        # Only the branch outputs (and the biases added there) carry 1/n_b.
        assert [block.w_qkv.multiplier, block.w_out.multiplier, block.w1.multiplier, block.w2.multiplier] == \
            pytest.approx([1.0, 1 / BLOCKS, 1.0, 1 / BLOCKS])
        assert [block.b_qkv.multiplier, block.b_out.multiplier, block.b1.multiplier, block.b2.multiplier,
                block.ln1.bias.multiplier] == pytest.approx([1.0, 1 / BLOCKS, 1.0, 1 / BLOCKS, 1.0])
    final = scalings.layers[-2].module.module
    assert get(final.gain) == pytest.approx((1.0, 1 / D, 0.0))
    assert get(scalings.layers[-1].module.weight) == pytest.approx((1.0, 1 / D, 1.0))
    assert scalings.layers[-1].module.weight.multiplier == pytest.approx(1 / D)
