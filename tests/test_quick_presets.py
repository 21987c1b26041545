"""The quick presets of the Figure 4 experiments do what they are for, and the
transformer's training speed is what its parameterisation predicts.

The fast tests write a CompleteP transformer by hand (docs/background.md §3.4: embedding
wte[x] + wpe[t]; blocks z ← z + Attn(z)/n_b, z ← z + MLP(z)/n_b without LayerNorm; causal
softmax attention with logits times 1/d_h; exact GELU; LM head times 1/d, base width 1)
and check the library's BP gradient and first Adam update against it, with the per-group
rates and ε of §3.4's table written here as closed forms. The slow tests run the
`resnet-cnn` and `transformer` quick presets end to end.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pcscale as pc
from pcscale import experiments as ex

VOCAB, WIDTH, HEADS, BLOCKS, SEQ, BATCH = 11, 8, 2, 2, 6, 4
HIGHEST = jax.lax.Precision.HIGHEST


# ------------------------------------------------------------- hand-written network
def _log_softmax(logits):
    shifted = logits - jnp.max(logits, axis=-1, keepdims=True)
    return shifted - jnp.log(jnp.sum(jnp.exp(shifted), axis=-1, keepdims=True))


def _hand_loss(weights, tokens, targets):
    """Token-summed cross-entropy, averaged over the batch, of the CompleteP network
    whose raw weights are `weights`."""
    d, head_dim = WIDTH, WIDTH // HEADS
    z = weights["wte"][tokens] + weights["wpe"][None, : tokens.shape[1]]
    causal = jnp.tril(jnp.ones((tokens.shape[1], tokens.shape[1]), bool))
    for w_qkv, w_out, w1, w2 in weights["blocks"]:
        qkv = jnp.einsum("btd,ed->bte", z, w_qkv, precision=HIGHEST)
        q, k, v = (qkv[..., i * d:(i + 1) * d].reshape(*z.shape[:2], HEADS, head_dim) for i in range(3))
        scores = jnp.einsum("bshc,buhc->bhsu", q, k, precision=HIGHEST) / head_dim
        attn = jax.nn.softmax(jnp.where(causal, scores, -jnp.inf), axis=-1)
        mixed = jnp.einsum("bhsu,buhc->bshc", attn, v, precision=HIGHEST).reshape(z.shape)
        z = z + jnp.einsum("btd,ed->bte", mixed, w_out, precision=HIGHEST) / BLOCKS
        hidden = jax.nn.gelu(jnp.einsum("btd,ed->bte", z, w1, precision=HIGHEST), approximate=False)
        z = z + jnp.einsum("bth,dh->btd", hidden, w2, precision=HIGHEST) / BLOCKS
    logits = jnp.einsum("btd,vd->btv", z, weights["head"], precision=HIGHEST) / d
    return jnp.mean(jnp.sum(-jnp.sum(targets * _log_softmax(logits), axis=-1), axis=-1))


def _raw(tree):
    """The raw weights of a built transformer (or of a gradient or update shaped like
    one) under the names of `_hand_loss`."""
    blocks = [layer.module.module for layer in tree.layers[1:1 + BLOCKS]]
    return {
        "wte": tree.layers[0].module.tokens,
        "wpe": tree.layers[0].module.positions,
        "blocks": [(b.w_qkv, b.w_out, b.w1, b.w2) for b in blocks],
        "head": tree.layers[-1].module.weight,
    }


def _table(learning_rate, eps):
    """docs/background.md §3.4 (CompleteP, d_0 = 1): (Adam rate, Adam ε) of each tensor,
    in the order of `jax.tree.leaves(_raw(...))`."""
    outer = (learning_rate, eps / WIDTH)  # embeddings and LM head
    block = (learning_rate / WIDTH, eps / (WIDTH * BLOCKS))  # every block matrix
    table = {"wte": outer, "wpe": outer, "blocks": [(block,) * 4] * BLOCKS, "head": outer}
    return jax.tree.leaves(table, is_leaf=lambda node: isinstance(node, tuple) and isinstance(node[0], float))


def _model_and_batch():
    model = pc.nn.transformer(
        VOCAB, WIDTH, HEADS, BLOCKS, max_len=SEQ,
        parameterisation=pc.CompleteP(init_std_rule=pc.InitStdRule.REFERENCE), dtype=jnp.float64,
        key=jax.random.PRNGKey(7),
    )
    rng = np.random.default_rng(7)
    text = rng.integers(0, VOCAB, BATCH + SEQ)
    # Consecutive, overlapping windows, as the experiment's batch (docs/background.md §6.2).
    rows = np.arange(BATCH)[:, None] + np.arange(SEQ)[None, :]
    tokens = jnp.asarray(text[rows], jnp.int32)
    targets = jnp.asarray(np.eye(VOCAB)[text[rows + 1]], jnp.float64)
    return model, tokens, targets


def _flat_pairs(expected, actual):
    return list(zip(jax.tree.leaves(expected), jax.tree.leaves(actual), strict=True))


def test_transformer_gradient_and_first_adam_step_follow_the_hand_written_network_and_the_table():
    model, tokens, targets = _model_and_batch()
    learning_rate, eps = 0.03, 1e-4  # ε comparable to the smallest gradients, so its scale matters
    loss, grads = eqx.filter_value_and_grad(lambda m: m.loss(tokens, targets))(model)
    hand_loss, hand_grads = jax.value_and_grad(_hand_loss)(_raw(model), tokens, targets)
    np.testing.assert_allclose(float(loss), float(hand_loss), rtol=1e-12)
    for want, got in _flat_pairs(hand_grads, _raw(grads)):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12 * float(jnp.max(jnp.abs(want))))
    # Every tensor carries gradient: nothing is cut off by the small head and init.
    assert all(float(jnp.max(jnp.abs(g))) > 0 for g in jax.tree.leaves(hand_grads))

    optimiser = pc.make_optimiser(model, pc.Adam(learning_rate, b1=0.9, b2=0.95, eps=eps))
    params = eqx.filter(model, eqx.is_array)
    updates, _ = optimiser.update(grads, optimiser.init(params), params)
    # Adam's first step: both moments are bias-corrected to g and g², so the update is
    # −rate·g/(|g| + ε), whatever b1 and b2 are.
    table = _table(learning_rate, eps)
    pairs = _flat_pairs(hand_grads, _raw(updates))
    assert len(table) == len(pairs) == len(jax.tree.leaves(params))
    for (rate, epsilon), (g, update) in zip(table, pairs):
        np.testing.assert_allclose(update, -rate * g / (jnp.abs(g) + epsilon), rtol=1e-8, atol=1e-14)


def test_transformer_loss_at_the_papers_learning_rate_moves_by_its_small_first_order_prediction():
    """Why a few steps at the paper's η = 1e-3 leave the loss at ln V: the logits start
    near 0 (head 1/d times σ0-sized weights and activities), and the first Adam step,
    sign descent at each tensor's rate, lowers the loss by Σ rate·Σ|g| only."""
    model, tokens, targets = _model_and_batch()
    learning_rate = 1e-3
    loss, grads = eqx.filter_value_and_grad(lambda m: m.loss(tokens, targets))(model)
    per_token = float(loss) / SEQ
    assert abs(per_token - np.log(VOCAB)) < 1e-3  # uniform predictions

    hand_grads = jax.grad(_hand_loss)(_raw(model), tokens, targets)
    table = _table(learning_rate, 1e-12)
    predicted = -sum(rate * float(jnp.sum(jnp.abs(g))) for (rate, _), g in zip(table, jax.tree.leaves(hand_grads),
                                                                              strict=True))

    optimiser = pc.make_optimiser(model, pc.Adam(learning_rate, b1=0.9, b2=0.95, eps=1e-12))
    params = eqx.filter(model, eqx.is_array)
    updates, _ = optimiser.update(grads, optimiser.init(params), params)
    change = float(eqx.apply_updates(model, updates).loss(tokens, targets)) - float(loss)
    assert change < 0
    np.testing.assert_allclose(change, predicted, rtol=0.05)
    assert abs(change) / SEQ < 1e-4 * per_token  # per step: 5 steps cannot move it by 5%


# ------------------------------------------------------------------- quick presets
@pytest.mark.slow
def test_resnet_cnn_quick_certifies_inference_and_alignment_rises_with_width(tmp_path, data_root):
    run = ex.run("resnet-cnn", "quick", tmp_path / "resnet", progress=False)
    assert not run.missing
    converged = np.concatenate([r.trace.converged for r in run.results])
    assert converged.mean() >= 0.9, converged
    by_width = {r.cell.settings["width"]: r.trace for r in run.results}
    narrow, wide = by_width[min(by_width)], by_width[max(by_width)]
    assert wide.cosine_lockstep[0] > narrow.cosine_lockstep[0]
    assert np.nanmean(wide.cosine_lockstep) > np.nanmean(narrow.cosine_lockstep)


@pytest.mark.slow
def test_transformer_quick_trains_and_alignment_rises_with_width(tmp_path, data_root):
    run = ex.run("transformer", "quick", tmp_path / "transformer", progress=False)
    assert not run.missing
    for r in run.results:
        trace = r.trace
        assert trace.final_pc_loss <= 0.95 * trace.pc_loss[0], (r.cell.name, trace.pc_loss, trace.final_pc_loss)
        assert trace.final_bp_loss <= 0.95 * trace.bp_loss[0], (r.cell.name, trace.bp_loss, trace.final_bp_loss)
    by_width = {r.cell.settings["width"]: r.trace for r in run.results}
    narrow, wide = by_width[min(by_width)], by_width[max(by_width)]
    assert wide.cosine_lockstep[0] > narrow.cosine_lockstep[0]
    assert np.nanmean(wide.cosine_lockstep) > np.nanmean(narrow.cosine_lockstep)
