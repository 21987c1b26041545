"""`pcscale.data.augment`: keyed, jittable pad-crop-flip.

The expectations are built in NumPy from the definition (pad with zeros, take an H × W
window, maybe mirror it), never from the implementation: each output sample is searched
for among every window and flip of its padded input. The images hold random normal
values, so two different windows or flips never coincide and the match is unique.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pcscale.data as data


def _images(n: int, channels: int = 2, height: int = 5, width: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, channels, height, width)).astype(np.float32)


def _candidates(images: np.ndarray, padding: int) -> np.ndarray:
    """Every (row, col, flip) window of each padded sample: shape (N, 2p+1, 2p+1, 2, C, H, W)."""
    n, channels, height, width = images.shape
    padded = np.pad(images, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    side = 2 * padding + 1
    out = np.empty((n, side, side, 2, channels, height, width), images.dtype)
    for row, col in itertools.product(range(side), range(side)):
        window = padded[:, :, row: row + height, col: col + width]
        out[:, row, col, 0], out[:, row, col, 1] = window, window[..., ::-1]
    return out


def _which(images: np.ndarray, output: np.ndarray, padding: int) -> list[tuple[int, int, int]]:
    """For each sample, the one (row, col, flip) whose window equals the output; fails if
    none or several do."""
    candidates = _candidates(images, padding)
    equal = (candidates == output[:, None, None, None]).all(axis=(-3, -2, -1))  # (N, 2p+1, 2p+1, 2)
    counts = equal.reshape(len(images), -1).sum(axis=1)
    assert (counts == 1).all(), f"samples matching no window or several: {np.flatnonzero(counts != 1)}"
    return [tuple(int(i) for i in np.argwhere(match)[0]) for match in equal]


def test_no_padding_and_no_flip_is_the_identity():
    images = _images(4)
    out = data.augment(jax.random.key(0), images, padding=0, flip=False)
    np.testing.assert_array_equal(np.asarray(out), images)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64])
def test_shape_and_dtype_are_kept(dtype):
    images = jnp.asarray(_images(3, channels=3, height=8, width=7), dtype=dtype)
    out = data.augment(jax.random.key(1), images, padding=3)
    assert out.shape == images.shape and out.dtype == images.dtype


def test_each_sample_is_one_window_of_its_padded_input_possibly_flipped():
    images = _images(32)
    for padding in (1, 2, 4):  # 4: wider than the image's height, windows of mostly zeros
        out = np.asarray(data.augment(jax.random.key(padding), images, padding=padding))
        _which(images, out, padding)
    out = np.asarray(data.augment(jax.random.key(7), images, padding=2, flip=False))
    assert all(flipped == 0 for _, _, flipped in _which(images, out, 2))


def test_a_smaller_crop_is_one_window_of_the_image_possibly_flipped():
    images = _images(64, height=8, width=8)
    out = np.asarray(data.augment(jax.random.key(3), images, padding=0, size=6))
    assert out.shape == (64, 2, 6, 6)
    seen = set()
    for n in range(len(images)):  # random normal values: exactly one window and flip match
        matches = [(i, j, f) for i in range(3) for j in range(3) for f in (0, 1)
                   if np.array_equal(out[n], images[n, :, i:i + 6, j:j + 6][..., ::-1] if f else
                                     images[n, :, i:i + 6, j:j + 6])]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) > 9  # 64 draws over 18 equally likely outcomes: far more than half of them appear


def test_a_crop_larger_than_the_padded_image_is_refused():
    with pytest.raises(ValueError, match="`size`"):
        data.augment(jax.random.key(0), _images(2, height=8, width=8), padding=1, size=11)


def test_same_key_same_output_other_key_other_output():
    images = _images(16)
    first = data.augment(jax.random.key(3), images)
    np.testing.assert_array_equal(np.asarray(first), np.asarray(data.augment(jax.random.key(3), images)))
    assert not np.array_equal(np.asarray(first), np.asarray(data.augment(jax.random.key(4), images)))
    # The older raw uint32 key of the same seed is the same key.
    np.testing.assert_array_equal(np.asarray(first), np.asarray(data.augment(jax.random.PRNGKey(3), images)))


def test_the_documented_key_scheme():
    """Sample i draws with jax.random.split(key, N)[i], split in three: row, column, flip."""
    images, padding, key = _images(8), 2, jax.random.key(11)
    out = np.asarray(data.augment(key, images, padding=padding))
    expected = []
    for sample_key in jax.random.split(key, len(images)):
        row_key, col_key, flip_key = jax.random.split(sample_key, 3)
        expected.append((int(jax.random.randint(row_key, (), 0, 2 * padding + 1)),
                         int(jax.random.randint(col_key, (), 0, 2 * padding + 1)),
                         int(jax.random.bernoulli(flip_key))))
    assert _which(images, out, padding) == expected


def test_every_offset_and_flip_occurs():
    # p = 1: 3 × 3 offsets × 2 flips = 18 outcomes, each of probability 1/18 per sample.
    # Over 2000 independent samples one given outcome is missed with probability
    # (17/18)^2000 ≈ e^-114, so (union bound) any miss has probability below 18·e^-114:
    # a failure here is a bug, not bad luck. Each count is Binomial(2000, 1/18), mean
    # 111.1 and standard deviation 10.2; the band 111 ± 61 (6 standard deviations) is
    # left with probability about 2e-9 per outcome.
    images = _images(2000, channels=1, height=3, width=3, seed=5)
    out = np.asarray(data.augment(jax.random.key(2024), images, padding=1))
    counts = {outcome: 0 for outcome in itertools.product(range(3), range(3), range(2))}
    for outcome in _which(images, out, 1):
        counts[outcome] += 1
    assert min(counts.values()) >= 1, counts
    assert all(abs(count - 2000 / 18) <= 61 for count in counts.values()), counts


def test_runs_inside_a_callers_jit_and_accepts_numpy_and_jax_input():
    images = _images(6)

    @jax.jit
    def step(key, batch):
        return data.augment(key, batch, padding=2) * 2.0

    key = jax.random.key(9)
    eager = np.asarray(data.augment(key, images, padding=2))
    np.testing.assert_array_equal(np.asarray(step(key, jnp.asarray(images))), 2.0 * eager)
    np.testing.assert_array_equal(np.asarray(data.augment(key, jnp.asarray(images), padding=2)), eager)


def test_bad_arguments_name_the_argument():
    images, key = _images(2), jax.random.key(0)
    with pytest.raises(ValueError, match=r"`images`.*\(5, 6\)"):
        data.augment(key, images[0, 0])
    with pytest.raises(ValueError, match="`images`"):
        data.augment(key, images[None])
    with pytest.raises(ValueError, match="`padding`.*-1"):
        data.augment(key, images, padding=-1)
    with pytest.raises(TypeError, match="`key`.*0"):
        data.augment(0, images)
    with pytest.raises(TypeError, match="`key`.*float32"):
        data.augment(images, images)
    with pytest.raises(ValueError, match=r"`key`.*shape \(2,\)"):
        data.augment(jax.random.split(key, 2), images)
    with pytest.raises(ValueError, match=r"`key`.*uint32.*\(3,\)"):
        data.augment(np.zeros(3, np.uint32), images)


def test_wrongly_typed_padding_and_flip_name_the_argument(unchecked):
    images, key = _images(2), jax.random.key(0)
    for padding in (1.5, "4", True):
        with pytest.raises(TypeError, match="`padding`"):
            data.augment(key, images, padding=padding)
    for flip in (1, "yes", None):
        with pytest.raises(TypeError, match="`flip`"):
            data.augment(key, images, flip=flip)
