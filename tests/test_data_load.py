"""pcscale.data.load, its root lookup, subsets and preprocessing, the offline defaults,
the toy task and the download helper (on local file:// fixtures)."""

import hashlib
import io
import os
import tarfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_data_readers import write_cifar10, write_idx

import pcscale.data as data
from pcscale.data import _download

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _mnist_root(tmp_path, n_train=12, n_test=5, seed=0):
    rng = np.random.default_rng(seed)
    folder = tmp_path / "mnist"
    folder.mkdir(parents=True)
    raw = {}
    for split, n, (images, labels) in (("train", n_train, data._load.IDX_FILES["train"]),
                                       ("test", n_test, data._load.IDX_FILES["test"])):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n).astype(np.uint8)
        write_idx(folder / (images + ".gz"), x, compress=True)
        write_idx(folder / labels, y, compress=False)  # gzipped or not: both are found
        raw[split] = (x, y)
    return raw


def test_mnist_preprocessing_layout_and_one_hot(tmp_path):
    raw = _mnist_root(tmp_path)
    ds = data.load("mnist", root=tmp_path)
    x, y = raw["train"]
    assert ds.x.dtype == np.float32 and ds.x.shape == (12, 1, 28, 28)
    np.testing.assert_allclose(ds.x[:, 0], (x / 255.0 - 0.1307) / 0.3081, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(ds.labels, y)
    np.testing.assert_array_equal(ds.y, np.eye(10)[y])
    assert ds.name == "mnist" and ds.source == str(tmp_path / "mnist") and ds.substitute_for is None
    flat = data.load("mnist", root=tmp_path, split="test", flatten=True, one_hot=False)
    np.testing.assert_allclose(flat.x, ((raw["test"][0] / 255.0 - 0.1307) / 0.3081).reshape(5, 784), atol=1e-6)
    np.testing.assert_array_equal(flat.y, raw["test"][1])


def test_subsets_are_deterministic_and_differ_across_seeds(tmp_path):
    raw = _mnist_root(tmp_path)
    a = data.load("mnist", root=tmp_path, n=5, seed=3)
    b = data.load("mnist", root=tmp_path, n=5, seed=3)
    c = data.load("mnist", root=tmp_path, n=5, seed=4)
    expected = np.random.default_rng(3).permutation(12)[:5]
    np.testing.assert_array_equal(a.indices, expected)
    np.testing.assert_array_equal(a.labels, raw["train"][1][expected])
    np.testing.assert_array_equal(a.x, b.x)
    assert not np.array_equal(a.indices, c.indices)


def test_cifar10_is_normalised_per_channel(tmp_path):
    written = write_cifar10(tmp_path / "cifar10" / "cifar-10-batches-py")
    ds = data.load("cifar10", root=tmp_path, split="test", flatten=True)
    images, labels = written["test_batch"]
    np.testing.assert_allclose(ds.x, (images.reshape(len(labels), -1) / 255.0 - 0.5) / 0.5, atol=1e-6)
    np.testing.assert_array_equal(ds.labels, labels)


def test_root_lookup_order(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(data.ENVIRONMENT_VARIABLE, raising=False)
    assert data.data_root() == tmp_path / "cache" / "pcscale" / "data"
    monkeypatch.setenv(data.ENVIRONMENT_VARIABLE, str(tmp_path / "env"))
    assert data.data_root() == tmp_path / "env"
    assert data.data_root(tmp_path / "arg") == tmp_path / "arg"
    _mnist_root(tmp_path / "env")
    assert data.load("mnist").source == str(tmp_path / "env" / "mnist")


def test_missing_files_name_the_path_looked_for(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "mnist" / "train-images-idx3-ubyte")):
        data.load("mnist", root=tmp_path)
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "cifar10" / "cifar-10-batches-py")):
        data.load("cifar10", root=tmp_path)
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "tinyshakespeare" / "input.txt")):
        data.load("tinyshakespeare", root=tmp_path)


def test_bad_requests_are_rejected(tmp_path):
    _mnist_root(tmp_path)
    with pytest.raises(ValueError, match="only 12 samples"):
        data.load("mnist", root=tmp_path, n=13)
    with pytest.raises(ValueError, match="unknown dataset 'cifar'"):
        data.load("cifar", root=tmp_path)
    with pytest.raises(ValueError, match="split"):
        data.load("mnist", root=tmp_path, split="validation")
    with pytest.raises(ValueError, match="`n`"):
        data.load("mnist", root=tmp_path, n=0)
    # Labels out of range are caught with the file named.
    write_idx(tmp_path / "mnist" / "train-labels-idx1-ubyte", np.full(12, 10, np.uint8), compress=False)
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte.*labels range"):
        data.load("mnist", root=tmp_path)


def test_default_images_load_offline_and_fallback_says_so(tmp_path):
    digits = data.load("digits")
    assert digits.x.shape == (1500, 1, 8, 8) and data.load("digits", split="test").x.shape == (297, 1, 8, 8)
    assert digits.x.min() == -1.0 and digits.x.max() == 1.0 and set(np.unique(digits.labels)) == set(range(10))
    with pytest.warns(UserWarning, match="no .*mnist.*offline default 'digits'"):
        used = data.load_or_default("mnist", root=tmp_path, n=20)
    assert used.name == "digits" and used.substitute_for == "mnist" and used.x.shape == (20, 1, 8, 8)
    # A corrupt file is an error, never a silent fallback.
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03\x00")
    (tmp_path / "mnist" / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00")
    with pytest.raises(ValueError):
        data.load_or_default("mnist", root=tmp_path)


def test_bundled_text_is_real_small_and_attributed():
    corpus = data.load("shakespeare-excerpt")
    text = data.decode(corpus.tokens, corpus.vocabulary)
    raw = Path(data.__file__).with_name("shakespeare_excerpt.txt").read_text()
    assert text == raw and raw.startswith("HAMLET, PRINCE OF DENMARK") and len(raw.encode()) <= 200_000
    if (SHARED / "shakespeare" / "input.txt").is_file():  # the real corpus it was cut from
        assert (SHARED / "shakespeare" / "input.txt").read_text().startswith(raw.rstrip("\n"))
    assert corpus.vocabulary == "".join(sorted(set(text)))
    notice = Path(data.__file__).with_name("SHAKESPEARE_NOTICE.txt").read_text()
    assert "Open Knowledge Foundation, Open Shakespeare" in notice and "CC BY 2.5" in notice
    with pytest.warns(UserWarning, match="shakespeare-excerpt"):
        assert data.load_or_default("tinyshakespeare", root="/nonexistent").vocabulary == corpus.vocabulary


def test_text_batch_follows_the_recipe(tmp_path):
    (tmp_path / "tiny.txt").write_text("abcdefghijklmnopqrstuvwxyz" * 3)
    corpus = data.read_text(tmp_path / "tiny.txt")
    x, y = data.text_batch(corpus, 4, 5, seed=7)
    n = 78 - 5 - 1
    start = int(np.random.default_rng(7).integers(0, n - 4 + 1))
    for b in range(4):
        expected = corpus.tokens[start + b: start + b + 6]
        np.testing.assert_array_equal(x[b], expected[:5])
        np.testing.assert_array_equal(y[b].argmax(-1), expected[1:])
    assert y.shape == (4, 5, 26) and np.all(y.sum(-1) == 1)
    with pytest.raises(ValueError, match="too few"):
        data.text_batch(corpus, 100, 5)


def test_toy_task_is_exact():
    key = jax.random.key(3)
    x, y = data.toy(key=key)
    expected = np.asarray(jax.random.normal(key, (40, 20), jnp.float64)).T  # conftest enables x64
    np.testing.assert_array_equal(x, expected)
    np.testing.assert_array_equal(y[:, 0], [1.0] * 10 + [-1.0] * 10)
    with pytest.raises(ValueError, match="even"):
        data.toy(samples=5, key=key)


@pytest.mark.skipif(not (SHARED / "mnist").is_dir() or not (SHARED / "shakespeare").is_dir(),
                    reason="../shared/data is absent (a user's machine)")
def test_real_mnist_and_shakespeare():
    ds = data.load("mnist", root=SHARED, n=2000, seed=0, flatten=True)
    assert ds.x.shape == (2000, 784) and ds.labels.max() == 9
    # The paper's normalisation makes the training pixels zero-mean, unit-variance.
    assert abs(float(ds.x.mean())) < 0.02 and abs(float(ds.x.std()) - 1.0) < 0.03
    corpus = data.read_text(SHARED / "shakespeare" / "input.txt")
    assert len(corpus.tokens) == 1_036_483


# ------------------------------------------------------------------- download
def _md5(path):
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def _remote(path, **kwargs):
    return _download.Remote(Path(path).as_uri(), Path(path).name, _md5(path), **kwargs)


def test_download_fetches_verifies_and_skips_valid_files(tmp_path, monkeypatch):
    source = tmp_path / "source"
    raw = _mnist_root(source)
    files = sorted((source / "mnist").iterdir())
    monkeypatch.setitem(_download.REMOTES, "mnist", tuple(_remote(f) for f in files))
    root = tmp_path / "root"
    folder = data.download("mnist", root)
    assert folder == root / "mnist"
    np.testing.assert_array_equal(data.load("mnist", root=root, one_hot=False).labels, raw["train"][1])
    stamp = (folder / files[0].name).stat().st_mtime_ns
    data.download("mnist", root)  # already there and valid: not fetched again
    assert (folder / files[0].name).stat().st_mtime_ns == stamp


def test_a_corrupt_download_leaves_nothing(tmp_path, monkeypatch):
    source = tmp_path / "source"
    _mnist_root(source)
    bad = _download.Remote((source / "mnist" / "t10k-labels-idx1-ubyte").as_uri(), "t10k-labels-idx1-ubyte",
                           "0" * 32)
    monkeypatch.setitem(_download.REMOTES, "mnist", (bad,))
    with pytest.raises(ValueError, match="corrupt or changed upstream"):
        data.download("mnist", tmp_path / "root")
    assert not (tmp_path / "root" / "mnist").exists()


def test_archives_unpack_atomically(tmp_path, monkeypatch):
    staging = tmp_path / "staging"
    written = write_cifar10(staging / "cifar-10-batches-py")
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(staging / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    monkeypatch.setitem(_download.REMOTES, "cifar10", (_remote(archive, archive=True),))
    data.download("cifar10", tmp_path / "root")
    ds = data.load("cifar10", root=tmp_path / "root", split="test", one_hot=False)
    np.testing.assert_array_equal(ds.labels, written["test_batch"][1])
    assert sorted(p.name for p in (tmp_path / "root" / "cifar10").iterdir()) == ["cifar-10-batches-py"]
    # A truncated archive (whose checksum matches what was published for it) fails to
    # unpack and leaves nothing.
    broken = tmp_path / "broken" / "cifar-100-python.tar.gz"
    broken.parent.mkdir()
    broken.write_bytes(archive.read_bytes()[:200])
    monkeypatch.setitem(_download.REMOTES, "cifar100", (_remote(broken, archive=True),))
    with pytest.raises(ValueError, match="could not be unpacked"):
        data.download("cifar100", tmp_path / "root")
    assert not (tmp_path / "root" / "cifar100").exists()


def test_unsafe_archive_entries_are_refused(tmp_path, monkeypatch):
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    monkeypatch.setitem(_download.REMOTES, "cifar10", (_remote(archive, archive=True),))
    with pytest.raises(ValueError, match="unsafe entry"):
        data.download("cifar10", tmp_path / "root")
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "root" / "cifar10").exists()


def test_offline_download_fails_fast_and_says_where_to_put_files(tmp_path, monkeypatch):
    unreachable = _download.Remote("http://127.0.0.1:9/input.txt", "input.txt", None, size=10)
    monkeypatch.setitem(_download.REMOTES, "tinyshakespeare", (unreachable,))
    with pytest.raises(ConnectionError, match=f"offline.*{tmp_path / 'root' / 'tinyshakespeare' / 'input.txt'}"):
        data.download("tinyshakespeare", tmp_path / "root", timeout=2)
    assert not (tmp_path / "root" / "tinyshakespeare").exists()
    for name, message in (("imagenet", "gated"), ("digits", "needs no download"), ("svhn", "unknown dataset")):
        with pytest.raises(ValueError, match=message):
            data.download(name, tmp_path / "root")
    assert not os.path.exists(tmp_path / "root" / "imagenet")


def test_reference_augment_is_a_padded_crop_possibly_flipped():
    images = np.random.default_rng(0).integers(1, 255, (6, 3, 8, 8)).astype(np.uint8)
    out = data.reference_augment(images, padding=2, seed=5)
    np.testing.assert_array_equal(out, data.reference_augment(images, padding=2, seed=5))
    padded = np.pad(images, ((0, 0), (0, 0), (2, 2), (2, 2)))
    flipped_any = False
    for index in range(6):
        matches = [
            (r, c, flip)
            for r in range(5) for c in range(5) for flip in (False, True)
            if np.array_equal(out[index], (padded[index, :, r:r + 8, c:c + 8])[..., ::-1 if flip else 1])
        ]
        assert matches, f"image {index} is not a crop of the padded input"
        flipped_any |= all(flip for *_, flip in matches)
    assert flipped_any  # with 6 images, seed 5 flips at least one
    with pytest.raises(ValueError, match="images"):
        data.reference_augment(images[0])


def test_the_defaults_need_no_network_and_no_files(tmp_path, monkeypatch):
    import socket

    def refuse(*args, **kwargs):
        raise OSError("network access in an offline test")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "empty-home"))
    monkeypatch.delenv(data.ENVIRONMENT_VARIABLE, raising=False)
    with pytest.warns(UserWarning, match="offline default 'digits'.*2000 samples asked for"):
        images = data.load_or_default("mnist", n=2000)
    assert images.name == "digits" and images.x.shape == (1500, 1, 8, 8)
    with pytest.warns(UserWarning, match="shakespeare-excerpt"):
        text = data.load_or_default("tinyshakespeare")
    assert len(text.vocabulary) == 65


def test_an_incomplete_folder_is_an_error_not_a_fallback(tmp_path):
    _mnist_root(tmp_path)
    (tmp_path / "mnist" / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="train-labels-idx1-ubyte") as caught:
        data.load_or_default("mnist", root=tmp_path)
    assert not isinstance(caught.value, data.DatasetMissing)


@pytest.mark.parametrize("name, mean, std", [("fashion-mnist", 0.5, 0.5)])
def test_fashion_mnist_normalisation(tmp_path, name, mean, std):
    raw = _mnist_root(tmp_path)
    (tmp_path / "mnist").rename(tmp_path / name)
    ds = data.load(name, root=tmp_path)
    np.testing.assert_allclose(ds.x[:, 0], (raw["train"][0] / 255.0 - mean) / std, atol=1e-6)


def test_imagenet_batch_is_normalised_per_channel_and_1000_wide(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 3, 224, 224), dtype=np.uint8)
    labels = np.array([0, 999, 5, 17, 400, 3])
    (tmp_path / "imagenet").mkdir()
    np.savez(tmp_path / "imagenet" / "train.npz", images=images, labels=labels)
    ds = data.load("imagenet", root=tmp_path, n=4, seed=2)
    chosen = np.random.default_rng(2).choice(6, 4, replace=False)  # docs/background.md §6.2
    np.testing.assert_array_equal(ds.labels, labels[chosen])
    mean = np.array([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1)
    std = np.array([0.229, 0.224, 0.225]).reshape(1, 3, 1, 1)
    np.testing.assert_allclose(ds.x, (images[chosen] / 255.0 - mean) / std, rtol=1e-5, atol=1e-5)
    assert ds.y.shape == (4, 1000) and ds.y[0, labels[chosen[0]]] == 1.0
    np.savez(tmp_path / "imagenet" / "train.npz", images=images[:, :, :100], labels=labels)
    with pytest.raises(ValueError, match="expected uint8"):
        data.load("imagenet", root=tmp_path)


def test_a_hand_copied_archive_is_unpacked_offline_and_kept(tmp_path, monkeypatch):
    staging = tmp_path / "staging"
    write_cifar10(staging / "cifar-10-batches-py")
    folder = tmp_path / "root" / "cifar10"
    folder.mkdir(parents=True)
    archive = folder / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(staging / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    offline = _download.Remote("http://127.0.0.1:9/cifar-10-python.tar.gz", archive.name, _md5(archive),
                               archive=True)
    monkeypatch.setitem(_download.REMOTES, "cifar10", (offline,))
    data.download("cifar10", tmp_path / "root", timeout=2)
    assert archive.is_file() and (folder / "cifar-10-batches-py" / "test_batch").is_file()


def test_downloaded_files_follow_the_umask(tmp_path, monkeypatch):
    source = tmp_path / "source"
    _mnist_root(source)
    files = sorted((source / "mnist").iterdir())
    monkeypatch.setitem(_download.REMOTES, "mnist", tuple(_remote(f) for f in files))
    previous = os.umask(0o022)
    try:
        folder = data.download("mnist", tmp_path / "root")
    finally:
        os.umask(previous)
    assert all((p.stat().st_mode & 0o777) == 0o644 for p in folder.iterdir())
