"""The 8 × 8 digits shipped in the package are scikit-learn's `load_digits`, read
without scikit-learn (which the core install no longer needs)."""

import subprocess
import sys

import numpy as np
import pytest

from pcscale import data


def test_the_bundled_digits_are_scikit_learns():
    datasets = pytest.importorskip("sklearn.datasets")
    reference = datasets.load_digits()
    train = data.load("digits", split="train")
    test = data.load("digits", split="test")
    images = np.concatenate([np.asarray(train.x), np.asarray(test.x)])
    labels = np.concatenate([np.argmax(train.y, axis=1), np.argmax(test.y, axis=1)])
    # pcscale normalises [0, 1] pixels to (x − 0.5)/0.5 (docs/data.md): undo it.
    np.testing.assert_allclose((images.reshape(len(images), 64) * 0.5 + 0.5) * 16.0,
                               reference.data, atol=1e-5)
    np.testing.assert_array_equal(labels, reference.target)


def test_loading_the_digits_imports_no_scikit_learn():
    probe = ("import sys; from pcscale import data; data.load('digits', n=8, seed=0); "
             "print('sklearn' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
