"""A decoder-only transformer (docs/background.md §3.4) as a PC network."""

from __future__ import annotations

import numbers

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .._energy import AbstractOutputEnergy, CrossEntropy
from .._layer import PCLayer
from .._model import PCModel
from .._parameterisation import AbstractParameterisation, CompleteP
from .._roles import NetworkShape, Role, WeightRole
from ._activation import gelu, identity
from ._checks import check_dtype, check_key, check_parameterisation, positive_int
from ._custom import parameterise

MLP_RATIO = 4
LAYER_NORM_EPS = 1e-5


class Embedding(eqx.Module):
    """Token plus position embedding of one sequence: wte[token_t] + wpe[t]."""

    tokens: Float[Array, "vocab d"]
    positions: Float[Array, "max_len d"]

    def __call__(self, x: Int[Array, " seq"]) -> Float[Array, "seq d"]:
        vocab, max_len = self.tokens.shape[0], self.positions.shape[0]
        if x.ndim != 1 or not jnp.issubdtype(x.dtype, jnp.integer):
            raise ValueError(
                f"the transformer takes integer token ids of per-sample shape (sequence,), got "
                f"shape {tuple(x.shape)} and dtype {x.dtype}; pass x as an int array (batch, "
                "sequence)."
            )
        if x.shape[0] > max_len:
            raise ValueError(
                f"the sequence has {x.shape[0]} tokens but the position table holds {max_len}; "
                f"shorten the sequences or build the model with max_len ≥ {x.shape[0]}."
            )
        x = eqx.error_if(
            x,
            (x < 0) | (x >= vocab),
            f"token ids must lie in [0, {vocab}) (the vocabulary size); map the text with the "
            "model's vocabulary or build it with a larger vocab_size.",
        )
        return self.tokens[x] + self.positions[: x.shape[0]]


class LayerNorm(eqx.Module):
    """LayerNorm over the last axis, g·(z − mean)/√(var + 1e-5) (+ b)."""

    gain: Float[Array, " d"]
    bias: Float[Array, " d"] | None = None

    def __call__(self, z: Float[Array, "... d"]) -> Float[Array, "... d"]:
        centred = z - jnp.mean(z, axis=-1, keepdims=True)
        out = _per_feature(self.gain, z) * centred * jax.lax.rsqrt(
            jnp.mean(centred**2, axis=-1, keepdims=True) + LAYER_NORM_EPS)
        return out if self.bias is None else out + _per_feature(self.bias, z)


def _per_feature(vector: Array, like: Array) -> Array:
    """`vector` (one value per feature, the last axis) shaped to broadcast against `like`
    explicitly (leading axes of size 1), not by NumPy's implicit rank promotion."""
    return vector.reshape((1,) * (like.ndim - 1) + vector.shape)


def _linear(weight: Array, bias: Array | None, x: Array) -> Array:
    out = x @ weight.T
    return out if bias is None else out + _per_feature(bias, out)


class Branch(eqx.Module):
    """The residual branch of one transformer block, for one sequence:

    u = Attn(LN₁(z)), v = MLP(LN₂(z + u)), branch(z) = u + v,

    so that the block z + branch(z) is z + Attn/n_b, then + MLP/n_b (the 1/n_b sits in
    the multipliers of W_out and W2, applied by the enclosing `Parameterised`)."""

    # qkv = 3d (queries, keys and values stacked) and hidden = 4d, named because the
    # checker binds dimensions left to right.
    w_qkv: Float[Array, "qkv d"]
    w_out: Float[Array, "d d"]
    w1: Float[Array, "hidden d"]
    w2: Float[Array, "d hidden"]
    ln1: LayerNorm | None
    ln2: LayerNorm | None
    b_qkv: Float[Array, " qkv"] | None
    b_out: Float[Array, " d"] | None
    b1: Float[Array, " hidden"] | None
    b2: Float[Array, " d"] | None
    n_heads: int = eqx.field(static=True)
    logit_scale: float = eqx.field(static=True)
    softmax: bool = eqx.field(static=True)

    def attention(self, x: Float[Array, "seq d"]) -> Float[Array, "seq d"]:
        seq, d = x.shape
        heads = self.n_heads
        q, k, v = jnp.split(_linear(self.w_qkv, self.b_qkv, x), 3, axis=-1)
        q, k, v = (a.reshape(seq, heads, d // heads) for a in (q, k, v))
        logits = jnp.einsum("thd,shd->hts", q, k) * self.logit_scale
        causal = jnp.tril(jnp.ones((seq, seq), dtype=bool))
        if self.softmax:
            weights = jax.nn.softmax(jnp.where(causal, logits, -jnp.inf), axis=-1)
        else:
            weights = jnp.where(causal, logits, 0.0)
        out = jnp.einsum("hts,shd->thd", weights, v).reshape(seq, d)
        return _linear(self.w_out, self.b_out, out)

    def mlp(self, x: Float[Array, "seq d"]) -> Float[Array, "seq d"]:
        return _linear(self.w2, self.b2, gelu(_linear(self.w1, self.b1, x)))

    def __call__(self, z: Float[Array, "seq d"]) -> Float[Array, "seq d"]:
        u = self.attention(z if self.ln1 is None else self.ln1(z))
        h = z + u
        return u + self.mlp(h if self.ln2 is None else self.ln2(h))


class TokenLinear(eqx.Module):
    """A linear map applied to every token: (seq, d) → (seq, out)."""

    weight: Float[Array, "out d"]

    def __call__(self, x: Float[Array, "seq d"]) -> Float[Array, "seq out"]:
        return x @ self.weight.T


def _block_role(path: str, d: int, std: float) -> WeightRole:
    name = path.lstrip(".").split(".")[0]
    if name.startswith("ln"):
        kind = Role.GAIN if path.endswith(".gain") else Role.VECTOR
        return WeightRole(kind, fan_in=d, branch=True, branch_output=False, std=std)
    if name.startswith("b"):
        # b_out and b2 are added at the sub-branch outputs, so they are scaled with them.
        return WeightRole(Role.VECTOR, fan_in=d, branch=True, branch_output=name in ("b_out", "b2"), std=std)
    fan_in = MLP_RATIO * d if name == "w2" else d
    return WeightRole(Role.HIDDEN, fan_in=fan_in, branch=True, branch_output=name in ("w_out", "w2"), std=std)


def transformer(
    vocab_size: int,
    d_model: int,
    n_heads: int,
    n_blocks: int,
    *,
    max_len: int,
    layer_norm: bool = False,
    softmax: bool = True,
    use_bias: bool = False,
    std: float = 0.02,
    base_width: int = 1,
    parameterisation: AbstractParameterisation = CompleteP(),
    output_energy: AbstractOutputEnergy = CrossEntropy(),
    output_precision: float = 1.0,
    dtype=jnp.float32,
    key: PRNGKeyArray,
) -> PCModel:
    r"""A decoder-only, character-level capable transformer (`docs/background.md` §3.4) as a PC
    network.

    Maps, for one sequence of T token ids:

    1. embedding: z_0 = wte[x_t] + wpe[t];
    2. n_blocks blocks: z ← z + u, u = (1/n_b)·Attn(LN₁(z)), then z ← z + (1/n_b)·MLP(
       LN₂(z)), with causal multi-head attention (fused W_qkv, logits times the
       parameterisation's logit scale, future positions masked) and a GELU MLP (d → 4d →
       d);
    3. final norm: LN(z), or the identity without LayerNorm (still a map with an
       activity);
    4. LM head: logits = a·W·z per token.

    The PC activities are the embedding output, each block output and the final-norm
    output: n_blocks + 2 tensors of shape (T, d) per sequence. The output energy is the
    **token-summed** cross-entropy on one-hot targets (T, vocab_size), so
    F = λ·T·(per-token mean CE) at the feedforward state; the BP twin `model.loss` is
    the same token sum, T times the paper's per-token mean BP loss: cosines are unchanged,
    norm ratios and logged losses must divide by T.

    Weights use the σ0 convention (`WeightRole.std`): embeddings and head N(0, σ0²),
    block matrices by the parameterisation's `init_std_rule`; the block's branch
    multiplier L^(−α) (with L = n_blocks) sits on W_out and W2. Under `CompleteP()` this
    is 1/n_b, logits 1/d_h, head 1/d, and the per-group Adam rates and ε of §3.4. The
    paper's Figure 4c uses `CompleteP(init_std_rule=InitStdRule.REFERENCE)` and, for its
    SP baseline, `SP(alpha=1.0, init_std_rule=InitStdRule.REFERENCE)`.

    **Arguments:**

    - `vocab_size`: V, the number of distinct tokens.
    - `d_model`: d, the width.
    - `n_heads`: n_h, which must divide d.
    - `n_blocks`: n_b ≥ 1, the depth used by the parameterisation.
    - `max_len`: the length of the position table (longest sequence).
    - `layer_norm`: use LayerNorms (gains, plus biases with `use_bias`). Default False,
      as in the paper: every LN is then the identity.
    - `softmax`: softmax attention (default); False gives causal linear attention.
    - `use_bias`: biases in the attention and MLP maps (and the LayerNorms). Default
      False.
    - `std`: σ0. Default 0.02.
    - `base_width`: d_0; the σ0 convention scales with d/d_0. Default 1 (the paper).
    - `parameterisation`: default `pcscale.CompleteP()`, the width- and depth-stable
      network the paper trains; `SP(alpha=1.0)` is its SP baseline.
    - `output_energy`, `output_precision`: ℓ (default token-summed cross-entropy) and λ.
    - `dtype`: parameter dtype. Default float32.
    - `key`: a JAX PRNG key.

    **Returns:** a [`PCModel`][pcscale.PCModel] taking integer token batches (B, T) and
    one-hot targets (B, T, vocab_size).
    """
    vocab_size = positive_int(vocab_size, "vocab_size", "pass the number of distinct tokens, e.g. 65")
    d = positive_int(d_model, "d_model", "pass the width, e.g. 64")
    n_heads = positive_int(n_heads, "n_heads", "pass the number of attention heads, e.g. 4")
    n_blocks = positive_int(n_blocks, "n_blocks", "pass the number of blocks, e.g. 2")
    max_len = positive_int(max_len, "max_len", "pass the longest sequence length, e.g. 32")
    base_width = positive_int(base_width, "base_width", "the paper uses 1")
    if d % n_heads:
        raise ValueError(
            f"`n_heads` must divide `d_model`, got d_model={d} and n_heads={n_heads}; choose "
            f"e.g. n_heads in {[h for h in range(1, min(d, 16) + 1) if d % h == 0]}."
        )
    if isinstance(std, bool) or not isinstance(std, numbers.Real) or not std > 0:
        raise ValueError(f"`std` must be a positive float σ0, got {std!r}; the paper uses 0.02.")
    check_parameterisation(parameterisation)
    check_dtype(dtype)
    check_key(key)
    shape = NetworkShape(width=d, depth=n_blocks, residual=True, base_width=base_width)
    keys = jax.random.split(key, n_blocks + 4)

    # Both tables are σ0-convention inputs; their scaling does not depend on the fan-in.
    embed_scaling = parameterisation.scaling(WeightRole(Role.INPUT, fan_in=vocab_size, std=std), shape)
    embedding = Embedding(
        embed_scaling.sample((vocab_size, d), dtype, key=keys[0]),
        embed_scaling.sample((max_len, d), dtype, key=keys[1]),
    )
    layers = [PCLayer(embedding, scaling=embed_scaling)]

    def zeros(*dims):
        return jnp.zeros(dims, dtype)

    def norm():
        return LayerNorm(zeros(d), zeros(d) if use_bias else None) if layer_norm else None

    for index in range(n_blocks):
        branch = Branch(
            w_qkv=zeros(3 * d, d), w_out=zeros(d, d), w1=zeros(MLP_RATIO * d, d), w2=zeros(d, MLP_RATIO * d),
            ln1=norm(), ln2=norm(),
            b_qkv=zeros(3 * d) if use_bias else None, b_out=zeros(d) if use_bias else None,
            b1=zeros(MLP_RATIO * d) if use_bias else None, b2=zeros(d) if use_bias else None,
            n_heads=n_heads, logit_scale=parameterisation.attention_logit_scale(d // n_heads), softmax=softmax,
        )
        module = parameterise(
            branch, lambda path, _: _block_role(path, d, std), parameterisation, shape, key=keys[2 + index]
        )
        layers.append(PCLayer(module, skip=True))

    if layer_norm:
        def final_role(path, _):
            return WeightRole(Role.GAIN if path.endswith(".gain") else Role.VECTOR, fan_in=d, std=std)

        final = parameterise(norm(), final_role, parameterisation, shape, key=keys[-2])
        layers.append(PCLayer(final))
    else:
        layers.append(PCLayer(identity))
    head_scaling = parameterisation.scaling(WeightRole(Role.OUTPUT, fan_in=d, std=std), shape)
    head = TokenLinear(head_scaling.sample((vocab_size, d), dtype, key=keys[-1]))
    layers.append(PCLayer(head, scaling=head_scaling))
    return PCModel(tuple(layers), output_energy, output_precision=float(output_precision))
