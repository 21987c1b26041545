"""Data augmentation: the reference implementation's one-off CIFAR augmentation in NumPy
(docs/background.md §6.2), and a keyed, jittable pad-crop-flip in JAX."""

from __future__ import annotations

import functools

import numpy as np


def reference_augment(images: np.ndarray, *, padding: int = 4, seed: int = 0) -> np.ndarray:
    """Augment a batch once, as the paper's reference code did for its fixed CIFAR-10
    batch: pad each image by `padding` zeros on every side, crop a random window of the
    original size, and flip it horizontally with probability 1/2. The reference also
    rotated by up to ±10°; that step is omitted (the torchvision pipeline cannot be
    reproduced exactly without torchvision). Off by default everywhere: record when used.

    **Arguments:** `images` (N, C, H, W); `padding` (default 4); `seed` for
    `numpy.random.default_rng`.

    **Returns:** the augmented batch, same shape and dtype.
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"`images` must be a (N, C, H, W) batch, got shape {images.shape}.")
    if isinstance(padding, bool) or not isinstance(padding, (int, np.integer)) or padding < 0:
        raise ValueError(f"`padding` must be a non-negative integer, got {padding!r}; the reference uses 4.")
    n, _, height, width = images.shape
    rng = np.random.default_rng(seed)
    padded = np.pad(images, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    rows = rng.integers(0, 2 * padding + 1, n)
    cols = rng.integers(0, 2 * padding + 1, n)
    flips = rng.random(n) < 0.5
    out = np.empty_like(images)
    for index in range(n):
        crop = padded[index, :, rows[index]: rows[index] + height, cols[index]: cols[index] + width]
        out[index] = crop[..., ::-1] if flips[index] else crop
    return out


def augment(key, images, *, padding: int = 4, flip: bool = True, size: int | None = None):
    """Randomly pad-and-crop, and flip, a batch of images: JAX, jittable and keyed.

    Each sample is padded with `padding` zeros on every side, cropped to `size × size`
    (default: back to its own `H × W`) at a random offset (row uniform in
    `0 … H + 2·padding − size`, column alike), then, when `flip`, mirrored left to right
    with probability 1/2. `padding=0, size=56` is PCX's Tiny ImageNet crop (64 → 56). It runs inside a caller's
    `jax.jit` (`padding` and `flip` are static: each new value compiles once) and is
    vectorised over the batch.

    **Keys.** `jax.random.split(key, N)` gives one key per sample, in batch order; sample
    `i`'s key is split in three, drawing its row offset, its column offset and its flip,
    in that order. The same key and batch give the same output; a sample's draws do not
    depend on the others' values.

    **Difference from PCX.** The zeros are added to the images *as given*: after
    normalisation, as [`load`][pcscale.data.load] returns them, they are zeros of the
    normalised scale (the mean colour), whereas PCX's torchvision pipeline pads the raw
    images before normalising (black borders). Pass raw images in [0, 1] and normalise
    afterwards to match it. Unlike [`reference_augment`][pcscale.data.reference_augment],
    there is no rotation either way.

    **Arguments:**

    - `key`: a JAX PRNG key, `jax.random.key(seed)` (or the older `jax.random.PRNGKey(seed)`).
    - `images`: a batch of shape `(N, C, H, W)`, a JAX or NumPy array, of any real dtype.
    - `padding`: the zeros added on each side before cropping; `0` crops nothing away.
    - `flip`: whether to flip horizontally with probability 1/2.
    - `size`: the side of the square crop, at most the padded side; None (default) keeps
      each image's own height and width.

    **Returns:** a JAX array of the batch's shape (with sides `size` if given) and dtype (a NumPy array becomes a JAX
    array first, so float64 stays float64 only in JAX's 64-bit mode).

    **Raises:** `ValueError` for a batch that is not 4-D, a negative `padding` or a key
    array of several keys; `TypeError` for a `padding` that is not an integer, a `flip`
    that is not a bool or a `key` that is not a PRNG key.
    """
    import jax.numpy as jnp

    images = jnp.asarray(images)
    if images.ndim != 4:
        raise ValueError(
            f"`images` must be a batch of shape (N, C, H, W), got shape {tuple(images.shape)}; add a batch axis "
            "to a single image (images[None]) or reshape flattened images to (N, C, H, W)."
        )
    if isinstance(padding, bool) or not isinstance(padding, (int, np.integer)):
        raise TypeError(f"`padding` must be an integer, got {padding!r} ({type(padding).__name__}); e.g. padding=4.")
    if padding < 0:
        raise ValueError(f"`padding` must be non-negative, got {padding}; use 0 for no padding, or e.g. 4.")
    if not isinstance(flip, (bool, np.bool_)):
        raise TypeError(f"`flip` must be True or False, got {flip!r} ({type(flip).__name__}).")
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
            raise TypeError(f"`size` must be an integer or None, got {size!r} ({type(size).__name__}); e.g. size=56.")
        largest = min(images.shape[2:]) + 2 * padding
        if not 1 <= size <= largest:
            raise ValueError(f"`size` must lie in 1 … {largest} (the padded side of these images), got {size}.")
        size = int(size)
    return _compiled()(_typed_key(key), images, padding=int(padding), flip=bool(flip), size=size)


def _typed_key(key):
    """`key` as a typed PRNG key (a legacy uint32 key is wrapped), or an error naming it."""
    import jax
    import jax.numpy  # noqa: F401 - jax.numpy.issubdtype below

    fix = "pass a single key, e.g. jax.random.key(0)"
    dtype = getattr(key, "dtype", None)
    if dtype == np.uint32:  # a raw key, as jax.random.PRNGKey makes
        try:
            key = jax.random.wrap_key_data(key)
        except (TypeError, ValueError):
            raise ValueError(
                f"`key` is a uint32 array of shape {tuple(key.shape)}, which is no raw PRNG key of JAX's "
                f"default kind (jax.random.PRNGKey(0) has shape {tuple(jax.random.PRNGKey(0).shape)}); {fix}."
            ) from None
        dtype = key.dtype
    if dtype is None or not jax.numpy.issubdtype(dtype, jax.dtypes.prng_key):
        shown = repr(key) if dtype is None else f"an array of dtype {dtype}"
        raise TypeError(f"`key` must be a JAX PRNG key, got {shown} ({type(key).__name__}); {fix}.")
    if key.shape != ():
        raise ValueError(f"`key` must be a single PRNG key, got a key array of shape {key.shape}; {fix}.")
    return key


@functools.cache
def _compiled():
    """The jitted batch transformation, built on first use (`pcscale.data` imports no JAX)."""
    import jax

    return jax.jit(_augment_batch, static_argnames=("padding", "flip", "size"))


def _augment_batch(key, images, *, padding: int, flip: bool, size: int | None):
    import jax
    import jax.numpy as jnp

    channels, height, width = images.shape[1:]
    out_height, out_width = (height, width) if size is None else (size, size)

    def one(sample_key, image):
        row_key, col_key, flip_key = jax.random.split(sample_key, 3)
        row = jax.random.randint(row_key, (), 0, height + 2 * padding - out_height + 1)
        col = jax.random.randint(col_key, (), 0, width + 2 * padding - out_width + 1)
        padded = jnp.pad(image, ((0, 0), (padding, padding), (padding, padding)))
        crop = jax.lax.dynamic_slice(padded, (0, row, col), (channels, out_height, out_width))
        if not flip:
            return crop
        return jnp.where(jax.random.bernoulli(flip_key), crop[..., ::-1], crop)

    return jax.vmap(one)(jax.random.split(key, images.shape[0]), images)
