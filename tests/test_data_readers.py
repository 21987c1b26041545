"""Tests of the dataset file readers: IDX, CIFAR pickles, image folders and text.

Every test writes tiny files in the official format itself and checks the reader returns
exactly what was written.
"""

from __future__ import annotations

import codecs
import errno
import gzip
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pcscale.data._cifar import ImageArrays, _load_pickle, read_cifar
from pcscale.data._folder import read_image_folder
from pcscale.data._idx import read_idx
from pcscale.data._safe_pickle import ALLOWED_GLOBALS
from pcscale.data._text import TextCorpus, decode, encode, read_text

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


# --------------------------------------------------------------------------- IDX


def write_idx(path: Path, array: np.ndarray, *, compress: bool) -> Path:
    """Write `array` as an IDX file, following the format's specification."""
    codes = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D}
    code = {**codes, np.float64: 0x0E}[array.dtype.type]
    header = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


@pytest.fixture
def mnist_like():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=(5,), dtype=np.uint8)
    return images, labels


@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip_images_and_labels(tmp_path, mnist_like, compress):
    images, labels = mnist_like
    # The suffix does not decide compression: a gzipped file without `.gz` must work too.
    got_images = read_idx(write_idx(tmp_path / "images-idx3-ubyte", images, compress=compress))
    got_labels = read_idx(write_idx(tmp_path / "labels-idx1-ubyte", labels, compress=compress))
    assert got_images.dtype == np.uint8 and got_images.shape == (5, 28, 28)
    np.testing.assert_array_equal(got_images, images)
    assert got_labels.dtype == np.uint8
    np.testing.assert_array_equal(got_labels, labels)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_other_types_are_native_endian(tmp_path, dtype):
    array = (np.arange(24).reshape(2, 3, 4) - 7).astype(dtype) * dtype(3)
    got = read_idx(write_idx(tmp_path / "x.idx", array, compress=False))
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative
    np.testing.assert_array_equal(got, array)


def test_idx_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope-idx1-ubyte"):
        read_idx(tmp_path / "nope-idx1-ubyte")


@pytest.mark.parametrize("first_bytes", [b"\x01\x00\x08\x01", b"\x00\x00\x07\x01", b"PK\x03\x04"])
def test_idx_wrong_magic(tmp_path, first_bytes):
    path = tmp_path / "bad"
    path.write_bytes(first_bytes + struct.pack(">I", 3) + bytes(3))
    with pytest.raises(ValueError, match="wrong magic number.*IDX file"):
        read_idx(path)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_truncated_and_too_long(tmp_path, mnist_like, compress):
    images, _ = mnist_like
    payload = write_idx(tmp_path / "ok", images, compress=False).read_bytes()
    for name, content in [("short", payload[:-1]), ("long", payload + b"\x00"), ("header", payload[:9])]:
        path = tmp_path / name
        path.write_bytes(gzip.compress(content) if compress else content)
        with pytest.raises(ValueError, match=f"{name}.*truncated or corrupt"):
            read_idx(path)


def test_idx_truncated_gzip(tmp_path, mnist_like):
    images, _ = mnist_like
    compressed = write_idx(tmp_path / "ok.gz", images, compress=True).read_bytes()
    path = tmp_path / "cut.gz"
    path.write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(ValueError, match="cut.gz.*gzip stream is corrupt"):
        read_idx(path)
    garbled = tmp_path / "garbled.gz"
    garbled.write_bytes(compressed[:10] + b"\xff" * 40 + compressed[50:])
    with pytest.raises(ValueError, match="garbled.gz.*gzip"):
        read_idx(garbled)


def test_idx_real_mnist():
    folder = SHARED_DATA / "mnist"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent (development data only)")
    labels = read_idx(folder / "train-labels-idx1-ubyte.gz")
    images = read_idx(folder / "t10k-images-idx3-ubyte.gz")
    assert labels.shape == (60000,) and labels.dtype == np.uint8
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.min() == 0 and labels.max() == 9
    assert set(np.unique(labels).tolist()) == set(range(10))


# --------------------------------------------------------------------------- CIFAR

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _pickle(path: Path, content) -> None:
    with path.open("wb") as file:
        pickle.dump(content, file)


def write_cifar10(folder: Path, per_batch: int = 2, seed: int = 0) -> dict[str, tuple[np.ndarray, list[int]]]:
    """Write a tiny CIFAR-10 python version; return each batch's data and labels."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    batches = {}
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=per_batch).tolist()
        _pickle(folder / name, {b"batch_label": name.encode(), b"labels": labels, b"data": data,
                                b"filenames": [f"{name}_{k}.png".encode() for k in range(per_batch)]})
        batches[name] = (data, labels)
    names = [n.encode() for n in CIFAR10_NAMES]
    meta = {b"num_cases_per_batch": per_batch, b"label_names": names, b"num_vis": 3072}
    _pickle(folder / "batches.meta", meta)
    return batches


def write_cifar100(folder: Path, seed: int = 1) -> dict[str, tuple[np.ndarray, list[int]]]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    batches = {}
    for name, n in [("train", 4), ("test", 3)]:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        fine = rng.integers(0, 100, size=n).tolist()
        fine[0] = 99
        coarse = [f // 5 for f in fine]
        content = {b"filenames": [b"x.png"] * n, b"batch_label": name.encode(),
                   b"fine_labels": fine, b"coarse_labels": coarse, b"data": data}
        _pickle(folder / name, content)
        batches[name] = (data, fine)
    _pickle(folder / "meta", {b"fine_label_names": [f"class{k:02d}".encode() for k in range(100)],
                              b"coarse_label_names": [f"super{k:02d}".encode() for k in range(20)]})
    return batches


def assert_channel_major(images: np.ndarray, data: np.ndarray) -> None:
    """Pixel (c, i, j) of image n must be data[n, 1024*c + 32*i + j]."""
    for n in range(data.shape[0]):
        for c, i, j in [(0, 0, 0), (0, 0, 31), (1, 5, 7), (2, 31, 0), (2, 31, 31), (1, 16, 3)]:
            assert images[n, c, i, j] == data[n, 1024 * c + 32 * i + j]
    expected = np.stack([[data[:, 1024 * c + 32 * i: 1024 * c + 32 * i + 32] for i in range(32)]
                         for c in range(3)])  # (3, 32, N, 32)
    np.testing.assert_array_equal(images, expected.transpose(2, 0, 1, 3))


def test_cifar10_train_and_test(tmp_path):
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    batches = write_cifar10(folder)
    train = read_cifar(folder, "train")
    assert isinstance(train, ImageArrays)
    assert train.images.dtype == np.uint8 and train.images.shape == (10, 3, 32, 32)
    assert train.labels.dtype == np.int64
    order = [f"data_batch_{i}" for i in range(1, 6)]
    data = np.concatenate([batches[name][0] for name in order])
    assert_channel_major(train.images, data)
    np.testing.assert_array_equal(train.labels, sum((batches[name][1] for name in order), []))
    assert train.class_names == tuple(CIFAR10_NAMES)
    assert train.files == tuple(str(folder / name) for name in order)

    test = read_cifar(str(folder), "test", classes=10)
    assert_channel_major(test.images, batches["test_batch"][0])
    np.testing.assert_array_equal(test.labels, batches["test_batch"][1])
    assert test.files == (str(folder / "test_batch"),)


def test_cifar100(tmp_path):
    folder = tmp_path / "cifar100" / "cifar-100-python"
    batches = write_cifar100(folder)
    for split in ("train", "test"):
        got = read_cifar(folder, split, classes=100)
        data, fine = batches[split]
        assert got.images.shape == (len(fine), 3, 32, 32)
        assert_channel_major(got.images, data)
        np.testing.assert_array_equal(got.labels, fine)
        assert got.labels.dtype == np.int64
        assert got.class_names == tuple(f"class{k:02d}" for k in range(100))
        assert got.files == (str(folder / split),)


def test_cifar_bad_split_and_classes(tmp_path):
    folder = tmp_path / "c"
    write_cifar10(folder)
    with pytest.raises(ValueError, match="split='valid'.*'train', 'test'"):
        read_cifar(folder, "valid")
    with pytest.raises(ValueError, match="classes=20"):
        read_cifar(folder, "train", classes=20)


def test_cifar_missing_folder_lists_every_file(tmp_path):
    folder = tmp_path / "absent"
    with pytest.raises(FileNotFoundError) as info:
        read_cifar(folder, "train")
    message = str(info.value)
    assert "does not exist" in message
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "batches.meta"]:
        assert str(folder / name) in message


def test_cifar_missing_file(tmp_path):
    folder = tmp_path / "c"
    write_cifar10(folder)
    (folder / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="missing: .*data_batch_3"):
        read_cifar(folder, "train")
    (folder / "meta").mkdir()  # CIFAR-100 files are all absent here
    with pytest.raises(FileNotFoundError, match="cifar-100-python"):
        read_cifar(folder, "test", classes=100)


def test_cifar_corrupt_and_truncated_pickle(tmp_path):
    folder = tmp_path / "c"
    write_cifar10(folder)
    content = (folder / "test_batch").read_bytes()
    (folder / "test_batch").write_bytes(content[: len(content) // 2])
    with pytest.raises(ValueError, match="test_batch.*could not be unpickled"):
        read_cifar(folder, "test")
    (folder / "test_batch").write_bytes(b"this is not a pickle")
    with pytest.raises(ValueError, match="test_batch.*could not be unpickled"):
        read_cifar(folder, "test")
    _pickle(folder / "test_batch", [1, 2, 3])
    with pytest.raises(ValueError, match="test_batch.*list.*expected a dict"):
        read_cifar(folder, "test")


def test_cifar_bad_contents(tmp_path):
    folder = tmp_path / "c"
    write_cifar10(folder)
    data = np.zeros((2, 3072), dtype=np.uint8)
    cases = [
        ({b"data": data}, r"no key b'labels'"),
        ({b"labels": [0, 1]}, r"no key b'data'"),
        ({b"data": np.zeros((2, 1024), np.uint8), b"labels": [0, 1]}, r"shape \(2, 1024\).*\(N, 3072\)"),
        ({b"data": data, b"labels": [0, 1, 2]}, "3 labels for 2 images"),
        ({b"data": data, b"labels": [0, 10]}, r"labels in \[0, 10\]; expected labels in \[0, 10\)"),
        ({b"data": data, b"labels": [-1, 3]}, r"labels in \[-1, 3\]"),
    ]
    for content, message in cases:
        _pickle(folder / "test_batch", content)
        with pytest.raises(ValueError, match=message):
            read_cifar(folder, "test")
    _pickle(folder / "batches.meta", {b"num_vis": 3072})
    with pytest.raises(ValueError, match=r"batches.meta.*no key b'label_names'"):
        read_cifar(folder, "train")


# --------------------------------------------------------------------------- image folder


def _png(path: Path, width: int, height: int, seed: int):
    image_module = pytest.importorskip("PIL.Image")
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    image_module.fromarray(pixels, "RGB").save(path)
    return pixels


def _expected_crop(path: Path, box_size: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    """Resize and crop with Pillow directly, using sizes worked out by hand in the test."""
    image_module = pytest.importorskip("PIL.Image")
    with image_module.open(path) as image:
        resized = image.convert("RGB").resize(box_size, resample=image_module.BILINEAR)
    return np.asarray(resized.crop(box)).transpose(2, 0, 1)


@pytest.fixture
def image_folder(tmp_path):
    pytest.importorskip("PIL")
    root = tmp_path / "imagenet"
    # Class names chosen so that sorting matters; files created out of order.
    for name in ("n02_dog", "n01_cat"):
        (root / name).mkdir(parents=True)
    _png(root / "n02_dog" / "b.PNG", 30, 40, seed=1)  # portrait, upper-case suffix
    _png(root / "n02_dog" / "a.png", 40, 30, seed=2)  # landscape
    _png(root / "n01_cat" / "z.png", 25, 25, seed=3)  # square
    _png(root / "n01_cat" / "c.png", 50, 21, seed=4)  # wide
    (root / "n01_cat" / "notes.txt").write_text("not an image")
    return root


def test_image_folder_stream_order_resize_and_crop(image_folder):
    root = image_folder
    got = read_image_folder(root, size=16, resize=20)
    assert isinstance(got, ImageArrays)
    order = [root / "n01_cat" / "c.png", root / "n01_cat" / "z.png",
             root / "n02_dog" / "a.png", root / "n02_dog" / "b.PNG"]
    assert got.files == tuple(str(p) for p in order)
    assert got.class_names == ("n01_cat", "n02_dog")
    np.testing.assert_array_equal(got.labels, [0, 0, 1, 1])
    assert got.labels.dtype == np.int64
    assert got.images.dtype == np.uint8 and got.images.shape == (4, 3, 16, 16)
    # Shorter side -> 20, longer side int(20 * long / short); crop corner round((new - 16) / 2).
    # c.png 50x21 -> 47x20, left round(15.5)=16 (Python rounds half to even), top 2.
    # z.png 25x25 -> 20x20, corner (2, 2). a.png 40x30 -> 26x20, corner (5, 2).
    # b.PNG 30x40 -> 20x26, corner (2, 5).
    plans = [((47, 20), (16, 2)), ((20, 20), (2, 2)), ((26, 20), (5, 2)), ((20, 26), (2, 5))]
    for n, (path, (box_size, (left, top))) in enumerate(zip(order, plans)):
        expected = _expected_crop(path, box_size, (left, top, left + 16, top + 16))
        np.testing.assert_array_equal(got.images[n], expected)


def test_image_folder_identity_when_no_resizing_needed(image_folder):
    # z.png is 25x25: with resize=25 and size=25 the output is the written pixels exactly.
    pixels = _png(image_folder / "n01_cat" / "z.png", 25, 25, seed=3)
    got = read_image_folder(image_folder, size=25, resize=25, limit=2)
    assert got.images.shape == (2, 3, 25, 25)
    np.testing.assert_array_equal(got.images[1], pixels.transpose(2, 0, 1))


def test_image_folder_limit_takes_first_in_stream_order(image_folder):
    got = read_image_folder(image_folder, size=8, resize=10, limit=3)
    first = ("n01_cat/c.png", "n01_cat/z.png", "n02_dog/a.png")
    assert got.files == tuple(str(image_folder / p) for p in first)
    np.testing.assert_array_equal(got.labels, [0, 0, 1])
    assert got.class_names == ("n01_cat", "n02_dog")
    full = read_image_folder(image_folder, size=8, resize=10)
    np.testing.assert_array_equal(got.images, full.images[:3])


def test_image_folder_errors(image_folder, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.*does not exist"):
        read_image_folder(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "loose.png").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="empty.*no class subfolders"):
        read_image_folder(empty)
    with pytest.raises(ValueError, match="size=32 is larger than resize=16"):
        read_image_folder(image_folder, size=32, resize=16)
    (image_folder / "n03_fish").mkdir()
    (image_folder / "n03_fish" / "readme.txt").write_text("no images")
    with pytest.raises(FileNotFoundError, match="n03_fish.*holds no images"):
        read_image_folder(image_folder, size=8, resize=10)
    (image_folder / "n03_fish" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ValueError, match="broken.jpg.*could not be read"):
        read_image_folder(image_folder, size=8, resize=10)


def test_image_folder_without_pillow(image_folder, monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ImportError, match=r"pip install 'pcscale\[images\]'"):
        read_image_folder(image_folder)


# --------------------------------------------------------------------------- text


def test_text_round_trip(tmp_path):
    text = "To be, or not to be:\nthat is the question. Ünïcödé ✓\n"
    path = tmp_path / "input.txt"
    path.write_text(text, encoding="utf-8")
    corpus = read_text(path)
    assert isinstance(corpus, TextCorpus)
    assert corpus.path == str(path)
    assert corpus.vocabulary == "".join(sorted(set(text)))
    assert corpus.vocabulary[:4] == "\n ,."  # sorted by code point
    assert corpus.tokens.dtype == np.int32 and corpus.tokens.shape == (len(text),)
    np.testing.assert_array_equal(corpus.tokens, [corpus.vocabulary.index(ch) for ch in text])
    assert decode(corpus.tokens, corpus.vocabulary) == text


def test_encode_decode_helpers():
    np.testing.assert_array_equal(encode("abca", "cab"), [1, 2, 0, 1])
    assert encode("abca", "cab").dtype == np.int32
    assert decode(np.array([[1, 2], [0, 1]]), "cab") == "abca"
    assert decode(np.array([], dtype=np.int32), "ab") == ""
    with pytest.raises(ValueError, match=r"not in the vocabulary: \['x', 'z'\]"):
        encode("axbz", "ab")
    with pytest.raises(ValueError, match=r"expected integers in \[0, 2\)"):
        decode(np.array([0, 2]), "ab")
    with pytest.raises(ValueError, match=r"expected integers in \[0, 2\)"):
        decode(np.array([-1]), "ab")


def test_text_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.txt"):
        read_text(tmp_path / "absent.txt")
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.txt.*is empty"):
        read_text(empty)
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("caf\u00e9 ok".encode("latin-1"))
    with pytest.raises(ValueError, match="latin1.txt.*not valid UTF-8: byte 0xe9 at byte offset 3"):
        read_text(latin)


def test_text_real_shakespeare():
    path = SHARED_DATA / "shakespeare" / "input.txt"
    if not path.is_file():
        pytest.skip(f"{path} is absent (development data only)")
    corpus = read_text(path)
    text = path.read_text(encoding="utf-8")
    assert corpus.tokens.shape == (len(text),)
    assert decode(corpus.tokens[:1000], corpus.vocabulary) == text[:1000]


# --------------------------------------------------------------------------- unsafe or unreadable files

def _chmod_000_is_enforced() -> bool:
    """False as root (with its usual capabilities) and on Windows, which ignore `chmod 000`."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        probe = Path(folder) / "probe"
        probe.write_bytes(b"x")
        probe.chmod(0)
        try:
            probe.read_bytes()
        except PermissionError:
            return True
        finally:
            probe.chmod(0o600)
    return False


needs_permissions = pytest.mark.skipif(
    not _chmod_000_is_enforced(),
    reason="this user (e.g. root) ignores chmod 000; the monkeypatched twin of this test still runs",
)


@pytest.fixture
def chmod_000():
    """Make paths unreadable (`chmod 000`); their modes are restored after the test."""
    changed = []

    def make_unreadable(path: Path) -> Path:
        changed.append((path, path.stat().st_mode))
        path.chmod(0)
        return path

    yield make_unreadable
    for path, mode in reversed(changed):
        path.chmod(mode)


def deny(monkeypatch, method: str, target: Path) -> None:
    """Make `Path.<method>` raise `PermissionError` for `target`, as the system does for a
    file without read permission (usable as root, which ignores file modes)."""
    original = getattr(Path, method)

    def denied(self, *args, **kwargs):
        if Path(self) == target:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, method, denied)


def assert_permission_message(error: BaseException, path: Path, fix: str = "chmod u+r") -> None:
    message = str(error)
    assert str(path) in message and "permission denied" in message and fix in message
    assert "truncated or corrupt" not in message and "does not exist" not in message


class _Payload:
    """Pickles as a call of `function(*arguments)`, then `__setstate__(state)` when a state is
    given, as a crafted file would."""

    def __init__(self, function, *arguments, state=None):
        self.function, self.arguments, self.state = function, arguments, state

    def __reduce__(self):
        if self.state is None:
            return self.function, self.arguments
        return self.function, self.arguments, self.state


@pytest.mark.parametrize("protocol", [2, 5])
@pytest.mark.parametrize("attack", ["open", "os.system"])
def test_cifar_refuses_a_pickle_that_would_run_code(tmp_path, protocol, attack):
    folder = tmp_path / "c"
    write_cifar10(folder)
    marker = tmp_path / "marker"
    function, arguments = {
        "open": (open, (str(marker), "w")),
        "os.system": (os.system, (f"touch {marker}",)),
    }[attack]
    batch = folder / "data_batch_1"
    with batch.open("wb") as file:
        pickle.dump({b"data": _Payload(function, *arguments), b"labels": [0, 1]}, file, protocol=protocol)
    with pytest.raises(ValueError) as info:
        read_cifar(folder, "train")
    message = str(info.value)
    assert str(batch) in message
    assert f"'{function.__module__}.{function.__name__}'" in message  # the refused global
    assert "not an official CIFAR batch" in message and "not loaded, for safety" in message
    assert "Extract the official archive again" in message
    assert not marker.exists()


def test_cifar_refuses_a_crafted_meta_file(tmp_path):
    folder = tmp_path / "c"
    write_cifar10(folder)
    marker = tmp_path / "marker"
    _pickle(folder / "batches.meta", {b"label_names": _Payload(open, str(marker), "w")})
    with pytest.raises(ValueError, match=r"batches\.meta.*'io\.open'.*not an official CIFAR batch"):
        read_cifar(folder, "test")
    assert not marker.exists()


def test_cifar_allowed_globals_admit_only_their_official_use(tmp_path):
    # `_codecs.encode` is admitted for Python 3's protocol-2 bytes (latin1) only.
    folder = tmp_path / "c"
    write_cifar10(folder)
    batch = folder / "test_batch"
    _pickle(batch, {b"data": _Payload(codecs.encode, "abc", "rot13"), b"labels": [0]})
    with pytest.raises(ValueError) as info:
        read_cifar(folder, "test")
    assert str(batch) in str(info.value) and "extract the archive again" in str(info.value)


@pytest.mark.parametrize("protocol", [0, 2, 3, 4, 5])
def test_cifar_reads_batches_pickled_at_every_protocol(tmp_path, protocol):
    folder = tmp_path / "c"
    batches = write_cifar10(folder)
    for path in folder.iterdir():
        with path.open("rb") as file:
            content = pickle.load(file, encoding="bytes")
        content[b"empty"] = b""  # Python 3 pickles b"" as bytes() at protocols 0-2
        with path.open("wb") as file:
            pickle.dump(content, file, protocol=protocol)
    got = read_cifar(folder, "test")
    np.testing.assert_array_equal(got.images.reshape(2, -1), batches["test_batch"][0])
    np.testing.assert_array_equal(got.labels, batches["test_batch"][1])
    assert got.class_names == tuple(CIFAR10_NAMES)


def test_cifar_reads_numpy1_module_names(tmp_path):
    # The official batches (and any pickle written by NumPy 1) name `numpy.core.multiarray`;
    # NumPy 2 writes `numpy._core.multiarray`. Both must read, whichever NumPy reads them.
    folder = tmp_path / "c"
    batches = write_cifar10(folder)
    batch = folder / "test_batch"
    content = pickle.dumps({b"data": batches["test_batch"][0], b"labels": batches["test_batch"][1]},
                           protocol=2)
    old = content.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in old
    batch.write_bytes(old)
    got = read_cifar(folder, "test")
    np.testing.assert_array_equal(got.images.reshape(2, -1), batches["test_batch"][0])


# NumPy's array reconstruction, as NumPy itself pickles arrays (`numpy.core` in NumPy 1,
# `numpy._core` in NumPy 2): `_reconstruct` at protocols 0-4, `_frombuffer` at protocol 5.
_reconstruct = np.zeros(1).__reduce_ex__(2)[0]
_frombuffer = np.zeros(1).__reduce_ex__(5)[0]


def _object_dtype_without_flags():
    """`numpy.dtype('O')` as a crafted file pickles it: its state's flags zeroed, so that NumPy
    no longer knows that it holds object pointers."""
    return _Payload(np.dtype, "O8", False, True, state=(3, "|", None, None, None, -1, -1, 0))


# Each payload, read by the reader before the stand-ins (NumPy itself handed to the pickle),
# built an object array whose pointers were the bytes b"AAAAAAAA", and converting the
# labels dereferenced them: the process died of SIGSEGV.
_MEMORY_PAYLOADS = {
    "ndarray": (2, lambda: _Payload(np.ndarray, (1,), np.dtype("O"), b"A" * 8), b"numpy\nndarray\n"),
    "frombuffer": (
        5, lambda: _Payload(_frombuffer, bytearray(b"A" * 8), _object_dtype_without_flags(), (1,), "C"),
        b"_frombuffer",
    ),
    "reconstruct": (
        2, lambda: _Payload(_reconstruct, np.ndarray, (0,), b"b",
                            state=(1, (1,), _object_dtype_without_flags(), False, b"A" * 8)),
        b"_reconstruct",
    ),
}

_READ_IN_A_SUBPROCESS = """
import sys
from pcscale.data import read_cifar
try:
    read_cifar(sys.argv[1], "test")
except ValueError as error:
    print("ValueError:", error)
else:
    print("read without error")
"""


@pytest.mark.parametrize("payload", sorted(_MEMORY_PAYLOADS))
def test_cifar_refuses_object_arrays_built_from_the_files_bytes(tmp_path, payload):
    # Read in a subprocess, so that a regression (a segmentation fault) fails this test
    # instead of killing pytest.
    folder = tmp_path / "c"
    write_cifar10(folder)
    protocol, make, named = _MEMORY_PAYLOADS[payload]
    batch = folder / "test_batch"
    content = pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": make()}, protocol=protocol)
    assert named in content  # the payload reaches the global it attacks
    batch.write_bytes(content)
    result = subprocess.run([sys.executable, "-c", _READ_IN_A_SUBPROCESS, str(folder)],
                            check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"the read crashed (status {result.returncode}): {result.stderr}"
    output = result.stdout
    assert output.startswith("ValueError:"), output
    assert str(batch) in output and "not an official CIFAR batch" in output
    assert "Extract the official archive again" in output
    if payload == "ndarray":
        assert "calls numpy.ndarray" in output and "directly" in output
    else:
        assert "dtype '|O8' (Python objects" in output


def _structured_array():
    return np.zeros(2, dtype=[("a", np.uint8), ("b", np.int32)])


def _sub_array_dtype_array():
    sub_array = _Payload(np.dtype, "V2", False, True, state=(3, "|", (np.dtype("u1"), (2,)), None, None, 2, 1, 0))
    return _Payload(_reconstruct, np.ndarray, (0,), b"b", state=(1, (2,), sub_array, False, bytes(4)))


@pytest.mark.parametrize("protocol", [2, 5])
@pytest.mark.parametrize("make, found", [
    (_structured_array, "structured or sub-array dtype"),
    (_sub_array_dtype_array, "structured or sub-array dtype"),
    (lambda: np.array([b"abc", b"de"]), "dtype '|S3' (byte strings)"),
    (lambda: np.array(["ab", "c"]), "dtype '<U2' (unicode strings)"),
    (lambda: np.array([1, None], dtype=object), "dtype '|O8' (Python objects"),
    (lambda: np.zeros(3, np.float16), "dtype '<f2' (not a plain number type)"),
    (lambda: np.zeros(2, "m8[s]"), "dtype '<m8' (not a plain number type)"),
])
def test_cifar_refuses_arrays_of_other_dtypes(tmp_path, protocol, make, found):
    folder = tmp_path / "c"
    write_cifar10(folder)
    batch = folder / "test_batch"
    with batch.open("wb") as file:
        pickle.dump({b"data": make(), b"labels": [0, 1]}, file, protocol=protocol)
    with pytest.raises(ValueError) as info:
        read_cifar(folder, "test")
    message = str(info.value)
    assert str(batch) in message and found in message
    assert "not an official CIFAR batch" in message and "Extract the official archive again" in message


@pytest.mark.parametrize("make, found", [
    (lambda: _Payload(_frombuffer, bytearray(5), np.dtype("u1"), (2, 3), "C"),
     "holds 5 bytes for an array of shape (2, 3) and dtype |u1"),
    (lambda: _Payload(_frombuffer, bytearray(8), np.dtype("<f4"), (3,), "C"),
     "holds 8 bytes for an array of shape (3,) and dtype <f4"),
    (lambda: _Payload(_frombuffer, bytearray(0), np.dtype("u1"), (-1,), "C"), "the shape (-1,)"),
    (lambda: _Payload(_frombuffer, bytearray(1), np.dtype("u1"), (True,), "C"), "the shape (True,)"),
    (lambda: _Payload(_frombuffer, bytearray(1), np.dtype("u1"), [1], "C"), "the shape [1]"),
    (lambda: _Payload(_frombuffer, bytearray(0), np.dtype("f8"), (0, sys.maxsize), "C"),
     f"the shape (0, {sys.maxsize}) (array is too big"),
    (lambda: _Payload(_frombuffer, bytearray(1), np.dtype("u1"), (1,), "A"), "the order 'A'"),
    (lambda: _Payload(_frombuffer, bytearray(2), np.dtype("u1"), (1, 2), "K", (0, 0)), "the order 'K'"),
    (lambda: _Payload(_frombuffer, bytearray(1), "u1", (1,), "C"), "gives an array the dtype 'u1'"),
    (lambda: _Payload(_frombuffer, [1], np.dtype("u1"), (1,), "C"), "as a list"),
    (lambda: _Payload(np.dtype, "u1", False, True, state=(3, "!", None, None, None, -1, -1, 0)),
     "the byte order '!'"),
    (lambda: _Payload(_reconstruct, np.dtype, (0,), b"b", state=(1, (1,), np.dtype("u1"), False, b"A")),
     "calls NumPy's _reconstruct"),
    (lambda: _Payload(_reconstruct, np.ndarray, (0,), b"b"), "gives a pickled array the state None"),
])
def test_cifar_refuses_arrays_that_do_not_add_up(tmp_path, make, found):
    folder = tmp_path / "c"
    write_cifar10(folder)
    batch = folder / "test_batch"
    with batch.open("wb") as file:
        pickle.dump({b"data": make(), b"labels": [0, 1]}, file, protocol=5)
    with pytest.raises(ValueError) as info:
        read_cifar(folder, "test")
    message = str(info.value)
    assert str(batch) in message and found in message
    assert "not an official CIFAR batch" in message and "Extract the official archive again" in message


def test_cifar_refuses_containers_that_contain_themselves(tmp_path):
    folder = tmp_path / "c"
    write_cifar10(folder)
    labels = [0]
    labels.append(labels)
    _pickle(folder / "test_batch", {b"data": np.zeros((2, 3072), np.uint8), b"labels": labels})
    with pytest.raises(ValueError, match=r"test_batch.*contains itself.*not an official CIFAR batch"):
        read_cifar(folder, "test")


@pytest.mark.parametrize("labels, found", [
    ([0, None], "labels of dtype object; expected integers"),
    ([0, [1, 2]], "labels that make no array (ValueError"),
    ([0.5, 1.5], "labels of dtype float64; expected integers"),
    ([0, 2**70], "labels of dtype object; expected integers"),
])
def test_cifar_labels_that_are_not_integers(tmp_path, labels, found):
    folder = tmp_path / "c"
    write_cifar10(folder)
    _pickle(folder / "test_batch", {b"data": np.zeros((2, 3072), np.uint8), b"labels": labels})
    with pytest.raises(ValueError) as info:
        read_cifar(folder, "test")
    assert str(folder / "test_batch") in str(info.value) and found in str(info.value)


@pytest.mark.parametrize("names", [7, [b"a", 3], {b"a": 1}])
def test_cifar_class_names_that_are_not_a_list_of_names(tmp_path, names):
    folder = tmp_path / "c"
    write_cifar10(folder)
    _pickle(folder / "batches.meta", {b"label_names": names})
    with pytest.raises(ValueError, match=r"batches\.meta.*expected a list of class names"):
        read_cifar(folder, "test")


def _transposed():
    return np.arange(24, dtype=np.int16).reshape(2, 3, 4).transpose(1, 0, 2)  # neither C nor F


@pytest.mark.parametrize("protocol", [0, 2, 3, 4, 5])
@pytest.mark.parametrize("array", [
    np.arange(12, dtype=np.uint8).reshape(3, 4),
    np.asfortranarray(np.arange(12, dtype=">i4").reshape(3, 4)),
    np.arange(6, dtype="<f8").reshape(3, 2) / 7,
    np.array([True, False, True]),
    np.zeros((0, 5), np.int64),
    np.array(3.5, np.float32),
    np.arange(4, dtype="<u8")[::2],
], ids=["u1", "fortran-big-endian-i4", "f8", "b1", "empty", "scalar", "strided"])
def test_cifar_pickled_arrays_read_back_exactly(tmp_path, protocol, array):
    path = tmp_path / "batch"
    with path.open("wb") as file:
        pickle.dump({b"x": array, b"nested": [(array, {b"y": array})], b"t": _transposed()}, file,
                    protocol=protocol)
    content = _load_pickle(path)
    for got in (content[b"x"], content[b"nested"][0][0], content[b"nested"][0][1][b"y"]):
        assert type(got) is np.ndarray and got.dtype == array.dtype.newbyteorder("=") and got.dtype.isnative
        np.testing.assert_array_equal(got, array)
        assert got.flags.owndata and got.flags.writeable
    np.testing.assert_array_equal(content[b"t"], _transposed())


def _python2_pickle(value) -> bytes:
    """`value` pickled at protocol 2 as Python 2's cPickle wrote the official CIFAR files:
    bytes as Python 2 strings (SHORT_BINSTRING, BINSTRING) and each array through
    `numpy.core.multiarray._reconstruct`, with its dtype as `numpy.dtype('u1', 0, 1)`."""

    def string(data: bytes) -> bytes:
        return (b"U" + bytes([len(data)]) if len(data) < 256 else b"T" + struct.pack("<i", len(data))) + data

    def integer(number: int) -> bytes:
        if 0 <= number < 256:
            return b"K" + bytes([number])
        return b"J" + struct.pack("<i", number)

    def save(item) -> bytes:
        if isinstance(item, bytes):
            return string(item)
        if isinstance(item, int):
            return integer(item)
        if isinstance(item, list):
            return b"](" + b"".join(map(save, item)) + b"e"
        if isinstance(item, dict):
            return b"}(" + b"".join(save(key) + save(entry) for key, entry in item.items()) + b"u"
        assert isinstance(item, np.ndarray)
        order, code = item.dtype.str[0], item.dtype.str[1:]
        dtype = (b"cnumpy\ndtype\n" + string(code.encode()) + integer(0) + integer(1) + b"\x87R"
                 + b"(" + integer(3) + string(order.encode()) + b"NNN" + integer(-1) * 2 + integer(0) + b"tb")
        shape = b"(" + b"".join(map(integer, item.shape)) + b"t"
        return (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + integer(0) + b"\x85"
                + string(b"b") + b"\x87R(" + integer(1) + shape + dtype + b"\x89" + string(item.tobytes())
                + b"tb")

    return b"\x80\x02" + save(value) + b"."


def test_cifar_reads_batches_pickled_by_python2(tmp_path):
    folder = tmp_path / "c"
    batches = write_cifar10(folder)
    for name, (data, labels) in batches.items():
        content = {b"batch_label": b"testing batch 1 of 1", b"labels": labels, b"data": data,
                   b"filenames": [b"domestic_cat_s_000907.png", b"hydrofoil_s_000078.png"]}
        (folder / name).write_bytes(_python2_pickle(content))
    meta = {b"num_cases_per_batch": 10000, b"label_names": [n.encode() for n in CIFAR10_NAMES], b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(_python2_pickle(meta))
    assert b"T\x00\x18\x00\x00" in (folder / "test_batch").read_bytes()  # the 6144 image bytes
    assert pickle.loads((folder / "batches.meta").read_bytes(), encoding="bytes") == meta
    for split in ("train", "test"):
        got = read_cifar(folder, split)
        names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        np.testing.assert_array_equal(got.images.reshape(-1, 3072),
                                      np.concatenate([batches[name][0] for name in names]))
        np.testing.assert_array_equal(got.labels, [label for name in names for label in batches[name][1]])
        assert got.class_names == tuple(CIFAR10_NAMES)


def test_cifar_unpickler_hands_out_no_numpy_object():
    # What each admitted global resolves to only records its arguments (or makes bytes).
    for (module, name), found in ALLOWED_GLOBALS.items():
        assert isinstance(found, type) and found.__module__ == "pcscale.data._safe_pickle", (module, name)
        assert not issubclass(found, (np.ndarray, np.dtype))


@pytest.mark.parametrize("target", [b"cnumpy\ndtype\n", b"c_codecs\nencode\n", b"cbuiltins\nbytes\n"])
@pytest.mark.parametrize("state", [b"}X\x03\x00\x00\x00fooK\x01s", b"N}X\x03\x00\x00\x00fooK\x01s\x86"])
def test_cifar_build_cannot_change_what_a_global_resolves_to(tmp_path, target, state):
    # BUILD on a global itself (with a dict state, or a slot state) would otherwise set
    # attributes on the reader's own objects, for every later file to meet.
    folder = tmp_path / "c"
    write_cifar10(folder)
    (folder / "test_batch").write_bytes(b"\x80\x02" + target + state + b"b.")
    with pytest.raises(ValueError, match="could not be unpickled"):
        read_cifar(folder, "test")
    assert not any(hasattr(found, "foo") for found in ALLOWED_GLOBALS.values())


@needs_permissions
def test_cifar_batch_without_read_permission(tmp_path, chmod_000):
    folder = tmp_path / "c"
    write_cifar10(folder)
    batch = chmod_000(folder / "data_batch_2")
    with pytest.raises(PermissionError) as info:
        read_cifar(folder, "train")
    assert_permission_message(info.value, batch)


def test_cifar_batch_that_cannot_be_opened(tmp_path, monkeypatch):
    folder = tmp_path / "c"
    write_cifar10(folder)
    batch = folder / "data_batch_2"
    deny(monkeypatch, "open", batch)
    with pytest.raises(PermissionError) as info:
        read_cifar(folder, "train")
    assert_permission_message(info.value, batch)
    assert info.value.errno == errno.EACCES


def test_cifar_directory_in_place_of_a_batch(tmp_path):
    folder = tmp_path / "c"
    write_cifar10(folder)
    (folder / "data_batch_2").unlink()
    (folder / "data_batch_2").mkdir()
    with pytest.raises(IsADirectoryError) as info:
        read_cifar(folder, "train")
    message = str(info.value)
    assert str(folder / "data_batch_2") in message
    assert "is a directory, not a CIFAR batch file" in message
    assert "extract the official archive again" in message


def test_cifar_folder_that_is_a_file(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.write_bytes(b"")
    with pytest.raises(FileNotFoundError) as info:
        read_cifar(folder, "test")
    assert str(folder) in str(info.value) and "it is a file, not a folder" in str(info.value)
    assert "Point `folder` at" in str(info.value)


def test_idx_directory_in_place_of_the_file(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.mkdir()
    with pytest.raises(IsADirectoryError) as info:
        read_idx(path)
    message = str(info.value)
    assert str(path) in message and "is a directory, not an IDX file" in message
    assert "point `path` at the IDX file inside it" in message and "remove the folder" in message


@needs_permissions
def test_idx_without_read_permission(tmp_path, mnist_like, chmod_000):
    path = chmod_000(write_idx(tmp_path / "labels-idx1-ubyte", mnist_like[1], compress=False))
    with pytest.raises(PermissionError) as info:
        read_idx(path)
    assert_permission_message(info.value, path)


def test_idx_that_cannot_be_opened(tmp_path, mnist_like, monkeypatch):
    path = write_idx(tmp_path / "labels-idx1-ubyte", mnist_like[1], compress=True)
    deny(monkeypatch, "read_bytes", path)
    with pytest.raises(PermissionError) as info:
        read_idx(path)
    assert_permission_message(info.value, path)


def test_text_byte_order_mark_is_dropped(tmp_path):
    text = "To be, or not to be:\nthat is the question. \u00dcn\u00efc\u00f6d\u00e9\n"
    plain, marked = tmp_path / "plain.txt", tmp_path / "marked.txt"
    plain.write_bytes(text.encode("utf-8"))
    marked.write_bytes(text.encode("utf-8-sig"))
    assert marked.read_bytes()[:3] == b"\xef\xbb\xbf"
    expected, got = read_text(plain), read_text(marked)
    assert "\ufeff" not in got.vocabulary
    assert got.vocabulary == expected.vocabulary
    np.testing.assert_array_equal(got.tokens, expected.tokens)
    assert decode(got.tokens, got.vocabulary) == text
    # Only one leading mark is dropped: a second one is text.
    twice = tmp_path / "twice.txt"
    twice.write_bytes(("\ufeff\ufeff" + text).encode("utf-8"))
    assert decode(read_text(twice).tokens, read_text(twice).vocabulary) == "\ufeff" + text
    only = tmp_path / "only-bom.txt"
    only.write_bytes(b"\xef\xbb\xbf")
    with pytest.raises(ValueError) as info:
        read_text(only)
    assert str(only) in str(info.value) and "only a UTF-8 byte-order mark" in str(info.value)
    assert "Check that the file was written" in str(info.value)


def test_text_directory_in_place_of_the_file(tmp_path):
    path = tmp_path / "input.txt"
    path.mkdir()
    with pytest.raises(IsADirectoryError) as info:
        read_text(path)
    message = str(info.value)
    assert str(path) in message and "is a directory, not a text file" in message
    assert "point `path` at the text file inside it" in message


@needs_permissions
def test_text_without_read_permission(tmp_path, chmod_000):
    path = tmp_path / "input.txt"
    path.write_text("hello", encoding="utf-8")
    chmod_000(path)
    with pytest.raises(PermissionError) as info:
        read_text(path)
    assert_permission_message(info.value, path)


def test_text_that_cannot_be_opened(tmp_path, monkeypatch):
    path = tmp_path / "input.txt"
    path.write_text("hello", encoding="utf-8")
    deny(monkeypatch, "read_bytes", path)
    with pytest.raises(PermissionError) as info:
        read_text(path)
    assert_permission_message(info.value, path)


def test_image_folder_root_that_is_a_file(tmp_path):
    pytest.importorskip("PIL")
    root = tmp_path / "train"
    root.write_bytes(b"")
    with pytest.raises(NotADirectoryError) as info:
        read_image_folder(root)
    assert str(root) in str(info.value) and "is a file, not a folder" in str(info.value)
    assert "Point `root` at the folder above the class folders" in str(info.value)


def test_image_folder_class_folder_that_cannot_be_listed(image_folder, monkeypatch):
    class_dir = image_folder / "n02_dog"
    deny(monkeypatch, "iterdir", class_dir)
    with pytest.raises(PermissionError) as info:
        read_image_folder(image_folder, size=8, resize=10)
    assert_permission_message(info.value, class_dir, fix="chmod u+rx")


def test_image_that_cannot_be_opened(image_folder, monkeypatch):
    image = image_folder / "n02_dog" / "a.png"
    deny(monkeypatch, "open", image)
    with pytest.raises(PermissionError) as info:
        read_image_folder(image_folder, size=8, resize=10)
    assert_permission_message(info.value, image)
    assert "could not be read" in str(info.value)


@needs_permissions
def test_image_folder_without_read_permission(image_folder, chmod_000):
    image = chmod_000(image_folder / "n01_cat" / "z.png")
    with pytest.raises(PermissionError) as info:
        read_image_folder(image_folder, size=8, resize=10)
    assert_permission_message(info.value, image)
    class_dir = chmod_000(image_folder / "n02_dog")
    with pytest.raises(PermissionError) as info:
        read_image_folder(image_folder, size=8, resize=10)
    assert_permission_message(info.value, class_dir, fix="chmod u+rx")
