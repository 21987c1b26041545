"""PCModel: a tuple of PCLayers, with its feedforward pass, activities and energies."""

from __future__ import annotations

from typing import overload

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PyTree, Shaped

from ._custom_types import Activities, BatchX, BatchY
from ._energy import AbstractOutputEnergy
from ._layer import PCLayer
from ._precise import full_precision
from ._validation import as_float_array, cast_to, check_one_hot, check_x, check_y, validated


class PCModel(eqx.Module):
    r"""A predictive coding network: layer maps f_1 … f_L and an output energy.

    The free activities are z_1 … z_H (H = L − 1), z_l being the output of map l;
    z_0 = x is clamped. Per sample,

    $$F_i = \sum_{l=1}^{H} \tfrac{\pi_l}{2}\|z_l - f_l(z_{l-1})\|^2 + \lambda\,\ell(y, f_L(z_H)),$$

    with π_l the `precision` of layer l (1 unless set; a layer may also learn a
    variance, see [`PCLayer`][pcscale.PCLayer]),

    and `energy` returns the batch mean F = (1/B)·Σ_i F_i. The feedforward pass
    `model(x)` *is* the backpropagation network, and its loss `loss(x, y)` is the batch
    mean of ℓ.

    Every public method takes **batched** arrays (batch on axis 0) and vectorises over
    the batch in one place; the layers themselves are unbatched.

    **Arguments:**

    - `layers`: the [`PCLayer`][pcscale.PCLayer]s f_1 … f_L (at least one).
    - `output_energy`: ℓ, an [`AbstractOutputEnergy`][pcscale.AbstractOutputEnergy]
      (`MSE()` or `CrossEntropy()`).
    - `output_precision`: λ > 0, the weight of the output term. Default 1.
    """

    layers: tuple[PCLayer, ...]
    output_energy: AbstractOutputEnergy
    output_precision: float = eqx.field(static=True, default=1.0)

    def __check_init__(self):
        if not isinstance(self.layers, tuple) or len(self.layers) < 1:
            raise ValueError(
                f"`layers` must be a non-empty tuple of PCLayer, got {self.layers!r}; pass "
                "e.g. (PCLayer(module_1), PCLayer(module_2))."
            )
        for index, layer in enumerate(self.layers):
            if not isinstance(layer, PCLayer):
                raise TypeError(
                    f"`layers[{index}]` must be a PCLayer, got {type(layer).__name__}; wrap "
                    "the module as PCLayer(module)."
                )
        if not isinstance(self.output_energy, AbstractOutputEnergy):
            raise TypeError(
                f"`output_energy` must be an AbstractOutputEnergy such as pcscale.MSE() or "
                f"pcscale.CrossEntropy(), got {self.output_energy!r}."
            )
        arrays = [leaf for leaf in jax.tree.leaves(self.layers) if eqx.is_array(leaf)]
        if arrays and not any(jnp.issubdtype(leaf.dtype, jnp.floating) for leaf in arrays):
            dtypes = sorted({str(leaf.dtype) for leaf in arrays})
            raise TypeError(
                f"`layers` must hold floating-point parameters, got only dtype {', '.join(dtypes)}; "
                "build them with a floating dtype, e.g. dtype=jnp.float32 in the pcscale.nn "
                "builders, or cast the weights with .astype(jnp.float32)."
            )
        last = self.layers[-1]
        if last.precision != 1.0 or last.log_variance is not None:
            raise ValueError(
                "the last layer's `precision` and `log_variance` must stay at their defaults (1.0, None), "
                f"got precision={last.precision!r}, log_variance={last.log_variance!r}: the output term is "
                "weighted by the model's `output_precision` λ instead; e.g. PCModel(layers, MSE(), "
                "output_precision=2.0)."
            )
        precision = self.output_precision
        if not (isinstance(precision, (int, float)) and precision > 0 and precision < float("inf")):
            raise ValueError(
                f"`output_precision` must be a positive finite float, got {precision!r}; the "
                "default is 1.0."
            )

    # ----------------------------------------------------------------- sizes
    @property
    def depth(self) -> int:
        """L, the number of layer maps."""
        return len(self.layers)

    @property
    def num_hidden(self) -> int:
        """H = L − 1, the number of free activities."""
        return len(self.layers) - 1

    @property
    def unit_precisions(self) -> bool:
        """Whether every hidden error has precision 1 and no learnt variance (the energy
        of the docstring, without the per-layer weights)."""
        return all(layer.precision == 1.0 and layer.log_variance is None for layer in self.layers[:-1])

    # -------------------------------------------------------- unbatched maths
    # One sample at a time (no batch axis), for `jax.vmap` and for writing new energies,
    # solvers and diagnostics on top of the model; the batched methods above validate
    # their inputs and map these over the batch.
    def forward_one(self, x: Array) -> Array:
        """ŷ = f_L(⋯f_1(x)) for one sample `x` (no batch axis, not validated)."""
        z = x
        for layer in self.layers:
            z = layer(z)
        return z

    def activities_one(self, x: Array) -> Activities:
        """The feedforward activities (z_1, …, z_H) of one sample `x`: the state every
        solver starts from (no batch axis, not validated)."""
        activities = []
        z = x
        for layer in self.layers[:-1]:
            z = layer(z)
            activities.append(z)
        return tuple(activities)

    def layer_energies_one(self, z: Activities, x: Array, y: Array) -> Float[Array, " L"]:
        """The L terms of F for one sample: (π_l/2)·‖z_l − f_l(z_{l−1})‖² for l = 1 … H
        (`PCLayer.error_energy`, with a learnt variance where set), then
        λ·ℓ(y, f_L(z_H)) (no batch axis, not validated)."""
        inputs = (x,) + tuple(z)
        # `z` is not validated here, so its length is not guaranteed to be H.
        terms = [
            layer.error_energy(z_l, layer(z_prev))
            for layer, z_prev, z_l in zip(self.layers[:-1], inputs[:-1], z, strict=False)
        ]
        prediction = self.layers[-1](inputs[-1])
        terms.append(self.output_precision * self.output_energy(prediction, y))
        return jnp.stack(terms)

    def energy_one(self, z: Activities, x: Array, y: Array) -> Float[Array, ""]:
        """F of one sample, the sum of `layer_energies_one` (no batch axis, not
        validated); `jax.grad` of it with respect to `z` is the activity gradient."""
        return jnp.sum(self.layer_energies_one(z, x, y))

    @property
    def dtype(self):
        """The floating dtype of the parameters (inputs and targets are cast to it)."""
        for leaf in jax.tree.leaves(eqx.filter(self, eqx.is_inexact_array)):
            return leaf.dtype
        return None

    # --------------------------------------------------------------- checks
    @overload
    def _check(self, x, y: None = None, z=None) -> tuple[Array, None]: ...

    @overload
    def _check(self, x, y: BatchY, z=None) -> tuple[Array, Array]: ...

    def _check(self, x, y=None, z=None) -> tuple[Array, Array | None]:
        """Validate shapes (static, so inside jit this runs at trace time only) and cast
        floating inputs and the targets to the model's dtype."""
        x = as_float_array(x, "x")
        check_x(x)
        if jnp.issubdtype(x.dtype, jnp.floating):
            x = cast_to(x, self.dtype)
        if y is not None:
            y = as_float_array(y, "y")
            try:
                out = jax.eval_shape(self.forward_one, x[0])
            except (TypeError, ValueError) as error:
                raise ValueError(
                    f"the model cannot take inputs of per-sample shape {tuple(x.shape[1:])}: "
                    f"{error}. Check the input dimension the model was built with."
                ) from error
            check_y(x, y, out.shape, self.output_energy.categorical)
            if self.output_energy.categorical and jnp.issubdtype(y.dtype, jnp.integer):
                y = check_one_hot(y)
            y = cast_to(y, self.dtype)
        if z is not None:
            expected = jax.eval_shape(self.activities_one, x[0])
            if isinstance(z, list):
                z = tuple(z)
            if not isinstance(z, tuple) or len(z) != len(expected):
                length = len(z) if isinstance(z, tuple) else "not a tuple"
                raise ValueError(
                    f"`z` must be a tuple of {len(expected)} activity arrays (one per hidden "
                    f"layer), got {type(z).__name__} ({length}); pass the activities returned "
                    "by init_activities or infer."
                )
            for index, (z_l, e_l) in enumerate(zip(z, expected, strict=True)):  # lengths checked above
                if tuple(jnp.shape(z_l)) != (x.shape[0],) + tuple(e_l.shape):
                    raise ValueError(
                        f"`z[{index}]` has shape {tuple(jnp.shape(z_l))}, expected "
                        f"{(x.shape[0],) + tuple(e_l.shape)} (batch, *activity shape)."
                    )
        return x, y

    # ------------------------------------------------------- batched, public
    @full_precision
    def __call__(self, x: Shaped[Array, " batch *input"]) -> Float[Array, " batch *output"]:
        """The feedforward pass ŷ = f_L(… f_1(x)) for a batch: the BP network."""
        x, _ = self._check(x)
        return jax.vmap(self.forward_one)(x)

    @full_precision
    def init_activities(self, x: Shaped[Array, " batch *input"]) -> Activities:
        """Feedforward activities z_l = f_l(z_{l−1}) for l = 1 … H, z_0 = x.

        At this state every hidden error is zero and `energy` equals λ·`loss`.
        """
        x, _ = self._check(x)
        return jax.vmap(self.activities_one)(x)

    @full_precision
    def errors(self, z: Activities, x: Shaped[Array, " batch *input"]) -> Activities:
        """Hidden prediction errors ε_l = z_l − f_l(z_{l−1}), l = 1 … H."""
        x, _ = self._check(x, z=z)
        inputs = (x,) + tuple(z)
        return tuple(
            z_l - jax.vmap(layer)(z_prev) for layer, z_prev, z_l in zip(self.layers[:-1], inputs[:-1], z, strict=True)
        )

    @full_precision
    def sample_energies(self, z: Activities, x: BatchX, y: BatchY) -> Float[Array, " batch"]:
        """Per-sample energies F_i."""
        x, y = self._check(x, y, z)
        return jax.vmap(self.energy_one)(z, x, y)

    def energy(self, z: Activities, x: BatchX, y: BatchY) -> Float[Array, ""]:
        """Batch-mean energy F = (1/B)·Σ_i F_i."""
        return jnp.mean(self.sample_energies(z, x, y))

    @full_precision
    def layer_energies(self, z: Activities, x: BatchX, y: BatchY) -> Float[Array, " L"]:
        """Batch-mean energy of each layer: H hidden terms, then λ·ℓ."""
        x, y = self._check(x, y, z)
        return jnp.mean(jax.vmap(self.layer_energies_one)(z, x, y), axis=0)

    @full_precision
    def loss(self, x: BatchX, y: BatchY) -> Float[Array, ""]:
        """BP loss 𝓛 = (1/B)·Σ_i ℓ(y_i, ŷ_i) of the feedforward pass. Like
        [`infer`][pcscale.infer], it refuses inputs or targets holding NaN or inf."""
        x, y = validated(self, x, y)
        return jnp.mean(jax.vmap(lambda xi, yi: self.output_energy(self.forward_one(xi), yi))(x, y))

    def parameter_scalings(self) -> PyTree:
        """The [`Scaling`][pcscale.Scaling] of every parameter, as a pytree with the
        structure of `eqx.filter(model, eqx.is_array)`."""
        return eqx.tree_at(
            lambda m: m.layers,
            eqx.filter(self, eqx.is_array),
            tuple(layer.parameter_scalings() for layer in self.layers),
            is_leaf=lambda node: node is None,
        )
