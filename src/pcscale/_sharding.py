"""Data parallelism through JAX's own sharding: a one-axis device mesh over which the
batch (and so every activity) is split while the parameters are replicated.

Nothing here is a framework: `make_data_mesh` builds a `jax.sharding.Mesh`, `shard_batch`
places arrays with a `NamedSharding`, and the jitted steps read the batch's sharding and
pin the activities to it inside the inference loop, so that the compiler keeps them
split and reduces the weight gradients and residual norms across devices.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import PyTree

BATCH_AXIS = "batch"


def _available() -> str:
    devices = jax.devices()
    kinds = sorted({f"{d.platform}" for d in devices})
    return f"{len(devices)} JAX device(s) ({', '.join(kinds)})"


def _too_many(requested: int) -> ValueError:
    hint = ""
    if jax.default_backend() == "cpu":
        hint = (
            f" On a CPU, XLA can split the host into {requested} devices: set "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={requested} before Python imports jax."
        )
    return ValueError(
        f"`devices={requested}` asks for more devices than exist: this process sees {_available()}; "
        f"ask for at most {jax.device_count()}.{hint}"
    )


def resolve_devices(
    devices: int | Sequence[jax.Device] | None,  # pyright: ignore[reportInvalidTypeForm]  # JAX binds jax.Device by assignment
) -> list[jax.Device]:  # pyright: ignore[reportInvalidTypeForm]  # JAX binds jax.Device by assignment
    """The devices meant by `devices`: all of them (None), the first n (an int), or the
    given ones (a sequence of `jax.Device`), with a clear error for a bad request."""
    everything = jax.devices()
    if devices is None:
        return list(everything)
    if isinstance(devices, bool) or isinstance(devices, (float, str)):
        raise TypeError(
            f"`devices` must be an int, a sequence of jax.Device or None, got {devices!r}; e.g. devices=4, "
            "or devices=None for every device."
        )
    if isinstance(devices, (int, np.integer)):
        count = int(devices)
        if count < 1:
            raise ValueError(f"`devices` must be at least 1, got {count}; e.g. devices={len(everything)}.")
        if count > len(everything):
            raise _too_many(count)
        return list(everything[:count])
    chosen = list(devices)
    if not chosen:
        raise ValueError("`devices` is an empty sequence; give at least one jax.Device, or None for all.")
    for item in chosen:
        if not isinstance(item, jax.Device):
            raise TypeError(f"`devices` must hold jax.Device objects, got {type(item).__name__} ({item!r}); pass "
                            "e.g. jax.devices()[:2], or an int for the first n devices.")
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"`devices` names a device more than once: {chosen}; give each device once.")
    return chosen


def make_data_mesh(
    devices: int | Sequence[jax.Device] | None = None,  # pyright: ignore[reportInvalidTypeForm]  # JAX binds jax.Device by assignment
) -> Mesh:
    """A one-axis device mesh (axis name `"batch"`) for data-parallel PC and BP training.

    **Arguments:**

    - `devices`: None for every device JAX sees (across all hosts after
      `jax.distributed.initialize`), an int n for the first n, or a sequence of
      `jax.Device`. Asking for more devices than exist is an error that says how many
      there are.

    **Returns:** a `jax.sharding.Mesh` of shape `(len(devices),)`.

    ```python
    >>> import pcscale as pc
    >>> mesh = pc.make_data_mesh(1)
    >>> mesh.axis_names, mesh.size
    (('batch',), 1)

    ```
    """
    return Mesh(np.array(resolve_devices(devices)), (BATCH_AXIS,))


def check_mesh(mesh) -> Mesh:
    if not isinstance(mesh, Mesh):
        raise TypeError(
            f"`mesh` must be a jax.sharding.Mesh, got {type(mesh).__name__}; build one with pcscale.make_data_mesh(n)."
        )
    return mesh


def batch_spec(mesh: Mesh) -> PartitionSpec:
    """Axis 0 split over every axis of `mesh` (all of them serve the batch)."""
    names = mesh.axis_names
    return PartitionSpec(names[0] if len(names) == 1 else tuple(names))


def nearest_sizes(batch: int, parts: int) -> list[int]:
    """The multiples of `parts` either side of `batch` (the one above only, below it)."""
    lower = batch - batch % parts
    return [lower, lower + parts] if lower else [parts]


def check_divisible(batch: int, parts: int, name: str) -> None:
    if batch % parts:
        sizes = " or ".join(map(str, nearest_sizes(batch, parts)))
        raise ValueError(
            f"`{name}` has batch size {batch}, which the {parts} devices of the mesh cannot share equally; "
            f"use a batch that is a multiple of {parts} (e.g. {sizes}), or fewer devices."
        )


def shard_batch(batch: PyTree, mesh: Mesh) -> PyTree:
    """Place every array of `batch` (e.g. `(x, y)`) on `mesh`, split along axis 0.

    Each leaf must have a batch size divisible by the number of devices; otherwise the
    error names the leaf, its size and the nearest valid sizes. On several hosts every
    process passes the same global batch and each keeps only the slices of its own
    devices.

    ```python
    >>> import jax.numpy as jnp
    >>> import pcscale as pc
    >>> mesh = pc.make_data_mesh(1)
    >>> x, y = pc.shard_batch((jnp.ones((8, 3)), jnp.zeros((8, 2))), mesh)
    >>> x.sharding.spec[0]
    'batch'

    ```
    """
    mesh = check_mesh(mesh)
    return _split(batch, NamedSharding(mesh, batch_spec(mesh)), "batch")


def shard_array(array, mesh: Mesh, name: str):
    """One array split along axis 0 over `mesh`; errors call it `name`."""
    return _split(array, NamedSharding(check_mesh(mesh), batch_spec(mesh)), name)


def _split(tree: PyTree, sharding: NamedSharding, name: str) -> PyTree:
    """Every array of `tree` laid out by the batch `sharding` (axis 0 split), after
    checking that its batch divides into the sharding's parts; None leaves (no z0) are
    kept. Errors call a leaf `name` followed by its path."""
    axes = sharding.spec[0]
    parts = int(np.prod([sharding.mesh.shape[a] for a in (axes if isinstance(axes, tuple) else (axes,))]))
    paths_and_leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    placed = []
    for path, leaf in paths_and_leaves:
        label = name + jax.tree_util.keystr(path)
        if np.ndim(leaf) < 1:
            raise ValueError(f"`{label}` is a scalar; data-parallel arrays need the batch on axis 0.")
        check_divisible(np.shape(leaf)[0], parts, label)
        placed.append(_place(leaf, sharding))
    return jax.tree_util.tree_unflatten(treedef, placed)


def _place(leaf, sharding: NamedSharding):
    """`leaf` laid out by `sharding`. An array already laid out so is returned as it is,
    and a JAX array is moved by JAX (it may span several hosts). Host data on several
    hosts: each process supplies only the slices its own devices hold, after checking
    that every process passed the same value."""
    if isinstance(leaf, jax.Array):
        if leaf.sharding.is_equivalent_to(sharding, leaf.ndim):
            return leaf
        if sharding.is_fully_addressable or not leaf.is_fully_addressable:
            return jax.device_put(leaf, sharding)
    elif sharding.is_fully_addressable:
        return jax.device_put(leaf, sharding)
    array = np.asarray(leaf)
    _check_same_on_every_process(array)
    return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def _check_same_on_every_process(array: np.ndarray) -> None:
    """Every process of a multi-host run must pass the same global batch (and model);
    compare a fingerprint (shape, sum, sum of squares) across processes."""
    from jax.experimental import multihost_utils

    values = np.nan_to_num(array.astype(np.float64))
    first = array.shape[0] if array.ndim else 0
    fingerprint = np.array([array.ndim, array.size, first, values.sum(), (values**2).sum()])
    try:
        multihost_utils.assert_equal(fingerprint, "")
    except AssertionError:
        raise ValueError(
            f"process {jax.process_index()} passed different data (shape {array.shape}) from process 0; every "
            "process of a multi-host run must pass the same global batch and model: load the same files with "
            "the same seed on every host (a host without the dataset may have fallen back to another one)."
        ) from None


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """Copy every array of `tree` (a model, an optimiser state) to all devices of `mesh`;
    other leaves are left as they are."""
    mesh = check_mesh(mesh)
    sharding = NamedSharding(mesh, PartitionSpec())

    return jax.tree.map(lambda leaf: _place(leaf, sharding) if isinstance(leaf, (jax.Array, np.ndarray)) else leaf,
                        tree)


def batch_sharding(x) -> NamedSharding | None:
    """The sharding to pin activities to, read from a concrete batch `x` outside jit:
    axis 0's part of `x`'s NamedSharding when it splits axis 0 over several devices,
    else None (one device: nothing to pin)."""
    sharding = getattr(x, "sharding", None)
    if not isinstance(sharding, NamedSharding) or sharding.mesh.size == 1:
        return None
    spec = tuple(sharding.spec)
    if not spec or spec[0] is None:
        return None
    return NamedSharding(sharding.mesh, PartitionSpec(spec[0]))


def follow_batch(x, y, z0=None):
    """What every public entry point does with its batch: `y` (and `z0`) laid out like
    `x` when `x` is split over several devices (a caller who split only x gets a
    data-parallel step, not JAX's error about incompatible devices), and the sharding to
    pin the activities to (None on one device).

    **Returns:** `(y, z0, sharding)`.
    """
    sharding = batch_sharding(x)
    if sharding is None:
        return y, z0, None
    return _split(y, sharding, "y"), _split(z0, sharding, "z0"), sharding


def pin(tree: PyTree, sharding: NamedSharding | None) -> PyTree:
    """Constrain every array of `tree` (batch on axis 0) to `sharding` inside jit; the
    identity for None."""
    if sharding is None:
        return tree
    return jax.tree.map(lambda leaf: jax.lax.with_sharding_constraint(leaf, sharding), tree)
