"""Bring your own Equinox blocks: declare (or infer) the roles of their weights and let
any parameterisation scale them."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import numpy as np
from jaxtyping import Array, PRNGKeyArray, PyTree

from .._parameterisation import AbstractParameterisation
from .._parameterised import Parameterised
from .._roles import NetworkShape, Role, WeightRole
from ._checks import check_key


def _paths_and_leaves(module) -> tuple[list[str], list[Array], object]:
    params = eqx.filter(module, eqx.is_array)
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    return [jax.tree_util.keystr(path) for path, _ in flat], [leaf for _, leaf in flat], treedef


def parameterise(
    module: PyTree,
    roles: PyTree | Callable[[str, Array], WeightRole],
    parameterisation: AbstractParameterisation,
    shape: NetworkShape,
    *,
    reinitialise: bool = True,
    key: PRNGKeyArray | None = None,
) -> Parameterised:
    """Apply a parameterisation to any Equinox module.

    Each array leaf gets the [`Scaling`][pcscale.Scaling] that `parameterisation` gives
    its role in a network of `shape`, and (by default) is redrawn from that scaling's
    init distribution, so every preset applies to your own blocks exactly as to the
    built-in ones. Wrap the result in a [`PCLayer`][pcscale.PCLayer].

    **Arguments:**

    - `module`: an Equinox module (one map f_l, or a residual branch of one).
    - `roles`: the [`WeightRole`][pcscale.WeightRole] of each array leaf, either as a
      pytree with the structure of `eqx.filter(module, eqx.is_array)`, or as a function
      `(path, leaf) -> WeightRole` where `path` is the leaf's `jax.tree_util.keystr`
      (e.g. `".weight"`). [`infer_roles`][pcscale.nn.infer_roles] derives them from a
      base-width and a target-width copy of the module.
    - `parameterisation`: e.g. `pcscale.MuPC()`.
    - `shape`: the [`NetworkShape`][pcscale.NetworkShape] of the whole network.
    - `reinitialise`: redraw every leaf from its scaling (default True). With False the
      module's values are kept and only the scalings are attached.
    - `key`: PRNG key, required when `reinitialise` is set.

    **Returns:** a [`Parameterised`][pcscale.Parameterised] module.
    """
    if not isinstance(parameterisation, AbstractParameterisation):
        raise TypeError(
            f"`parameterisation` must be a pcscale parameterisation such as pcscale.MuPC(), got "
            f"{parameterisation!r}."
        )
    if not isinstance(shape, NetworkShape):
        raise TypeError(
            f"`shape` must be a pcscale.NetworkShape, got {shape!r}; pass e.g. "
            "pcscale.NetworkShape(width=256, depth=8, residual=True)."
        )
    paths, leaves, treedef = _paths_and_leaves(module)
    declared = jax.tree.leaves(roles, is_leaf=lambda node: isinstance(node, WeightRole))
    # A roles pytree mirrors the module, so it may itself be a (callable) Equinox module:
    # it is a function of the path only if it holds no WeightRole.
    if callable(roles) and not any(isinstance(r, WeightRole) for r in declared):
        role_list = [roles(path, leaf) for path, leaf in zip(paths, leaves, strict=True)]
    else:
        role_list = declared
        if len(role_list) != len(leaves):
            raise ValueError(
                f"`roles` must hold one WeightRole per array leaf of `module` ({len(leaves)}: "
                f"{paths}), got {len(role_list)}; mirror eqx.filter(module, eqx.is_array) or "
                "pass a function (path, leaf) -> WeightRole."
            )
    checked: list[WeightRole] = []
    for path, role in zip(paths, role_list, strict=True):  # one role per leaf, checked above
        if not isinstance(role, WeightRole):
            raise TypeError(f"the role of leaf {path!r} must be a pcscale.WeightRole, got {role!r}.")
        checked.append(role)
    scalings = tuple(parameterisation.scaling(role, shape) for role in checked)
    if reinitialise:
        if key is None:
            raise ValueError("`key` is required to reinitialise the weights; pass key=jax.random.key(0).")
        check_key(key)
        # At least one key, so a module without leaves has one key more than leaves.
        keys = jax.random.split(key, max(len(leaves), 1))
        leaves = [s.sample(leaf.shape, leaf.dtype, key=k) for s, leaf, k in zip(scalings, leaves, keys, strict=False)]
        params = jax.tree.unflatten(treedef, leaves)
        module = eqx.combine(params, eqx.filter(module, eqx.is_array, inverse=True))
    return Parameterised(module, scalings)


def _width_axes(base: tuple[int, ...], target: tuple[int, ...], path: str) -> tuple[bool, ...]:
    if len(base) != len(target):
        raise ValueError(
            f"leaf {path!r} has {len(base)} axes in the base model and {len(target)} in the target; "
            "build both with the same architecture and only the width changed."
        )
    return tuple(b != t for b, t in zip(base, target, strict=True))


def infer_roles(
    base: PyTree,
    target: PyTree,
    *,
    branch: bool = False,
    branch_outputs: Sequence[str] | None = None,
    gain: float = 1.0,
) -> PyTree:
    """Derive the role of every weight by comparing two copies of a module that differ
    only in width, as μP libraries do.

    Matrices follow the Equinox layout `(out, in, *kernel)`. An axis whose size differs
    between `base` and `target` grows with width:

    | out grows | in grows | role |
    |---|---|---|
    | yes | yes | `Role.HIDDEN` |
    | yes | no | `Role.INPUT` |
    | no | yes | `Role.OUTPUT` |

    with fan-in the product of the target's axes after the first. Vectors (at most one
    axis) are `Role.GAIN` if every entry of the target is 1, else `Role.VECTOR`. A matrix
    with no width axis has no width scaling to give it, and an embedding table stored as
    `(vocabulary, width)` reads as an output: declare those roles explicitly instead
    (see [`parameterise`][pcscale.nn.parameterise]).

    **Arguments:**

    - `base`, `target`: the same module at two widths.
    - `branch`: the module is a residual branch: hidden matrices and vectors get
      `branch=True`.
    - `branch_outputs`: paths (`jax.tree_util.keystr`, e.g. `".w2"`) of the hidden
      matrices that produce the branch's output, and of biases added at it: they carry
      L^(−α). Default: the only hidden matrix, which must then be unique (biases are then
      not scaled).
    - `gain`: the gain of the activation that hidden matrices read (μP-family
      multipliers gain/√fan_in); input matrices read raw data and keep gain 1.

    **Returns:** a pytree of [`WeightRole`][pcscale.WeightRole] with the structure of
    `eqx.filter(target, eqx.is_array)`, to pass to `parameterise`.
    """
    base_paths, base_leaves, _ = _paths_and_leaves(base)
    paths, leaves, treedef = _paths_and_leaves(target)
    if base_paths != paths:
        raise ValueError(
            f"`base` and `target` must have the same weights, got {base_paths} and {paths}; build "
            "both with the same constructor and only the width changed."
        )
    hidden = []
    kinds = []
    for path, b, t in zip(paths, base_leaves, leaves, strict=True):
        grows = _width_axes(tuple(b.shape), tuple(t.shape), path)
        if t.ndim <= 1:
            ones = bool(np.all(np.asarray(t) == 1))
            kinds.append((Role.GAIN if ones else Role.VECTOR, max(1, int(t.size))))
            continue
        out_grows, in_grows = grows[0], any(grows[1:])
        fan_in = int(math.prod(t.shape[1:]))
        if out_grows and in_grows:
            kinds.append((Role.HIDDEN, fan_in))
            hidden.append(path)
        elif out_grows:
            kinds.append((Role.INPUT, fan_in))
        elif in_grows:
            kinds.append((Role.OUTPUT, fan_in))
        else:
            raise ValueError(
                f"leaf {path!r} (shape {tuple(t.shape)}) does not change with width, so its role "
                "cannot be inferred; declare the roles explicitly with pcscale.nn.parameterise."
            )
    if branch and not hidden:
        raise ValueError(
            "`branch=True` but the module has no hidden (width × width) matrix to carry the branch "
            "multiplier; declare the roles explicitly with pcscale.nn.parameterise."
        )
    if branch_outputs is None:
        if branch and len(hidden) > 1:
            raise ValueError(
                f"the branch has several hidden matrices {hidden}; say which produce its output "
                "with branch_outputs=[...] (they carry the branch multiplier L^(−α))."
            )
        outputs = set(hidden)
    else:
        outputs = set(branch_outputs)
        vectors = [path for path, (kind, _) in zip(paths, kinds, strict=True) if kind is Role.VECTOR]
        unknown = outputs - set(hidden) - set(vectors)
        if unknown:
            raise ValueError(
                f"`branch_outputs` names {sorted(unknown)}, which are neither hidden matrices nor "
                f"biases of the module; choose among {hidden + vectors}."
            )
    roles = []
    for path, (kind, fan_in) in zip(paths, kinds, strict=True):
        in_branch = branch and kind in (Role.HIDDEN, Role.VECTOR, Role.GAIN)
        roles.append(
            WeightRole(
                kind,
                fan_in=fan_in,
                branch=in_branch,
                branch_output=path in outputs if kind in (Role.HIDDEN, Role.VECTOR) else True,
                gain=gain if kind is Role.HIDDEN else 1.0,
            )
        )
    return jax.tree.unflatten(treedef, roles)
