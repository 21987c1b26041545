"""Tiny ImageNet in its official folder layout: `read_tiny_imagenet` and `load("tinyimagenet")`.

Each test builds a miniature `tiny-imagenet-200/` with Pillow (3 classes, 2 training images
each, 4 validation images, greyscale images among them) and checks the reader against what
Pillow itself decodes from the same files, so the expectations do not depend on the reader.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import pcscale.data as data

Image = pytest.importorskip("PIL.Image")

# wnids.txt lists them out of order; the labels follow the sorted order: n01… 0, n02… 1, n09… 2.
WNIDS = ("n09256479", "n01443537", "n02085620")
SORTED = sorted(WNIDS)
WORDS = {"n01443537": "goldfish, Carassius auratus", "n09256479": "coral reef"}  # n02085620 has none
# Validation images as val_annotations.txt lists them (not in file-name order).
VAL = (("val_3.JPEG", "n09256479"), ("val_0.JPEG", "n02085620"), ("val_2.JPEG", "n01443537"),
       ("val_1.JPEG", "n09256479"))
MEAN, STD = (0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821)  # as documented for "tinyimagenet"


def _jpeg(path: Path, seed: int, grey: bool = False, size: tuple[int, int] = (64, 64)) -> None:
    """A random-pixel JPEG (quality 100); `size` is (width, height)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size[1], size[0]) if grey else (size[1], size[0], 3)
    pixels = np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)
    Image.fromarray(pixels, "L" if grey else "RGB").save(path, format="JPEG", quality=100)


def _decoded(path: Path) -> np.ndarray:
    """What Pillow decodes from `path`, as RGB, channel-major."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1)


@pytest.fixture
def root(tmp_path) -> Path:
    """A data root holding tinyimagenet/tiny-imagenet-200 in the official layout."""
    top = tmp_path / "tinyimagenet" / "tiny-imagenet-200"
    top.mkdir(parents=True)
    (top / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    lines = ["n00001740\tentity"] + [f"{wnid}\t{words}" for wnid, words in WORDS.items()] + ["n99999999\tunused"]
    (top / "words.txt").write_text("\n".join(lines) + "\n")
    for index, wnid in enumerate(WNIDS):
        # "_10" sorts before "_9": the stream order is by file name, as text.
        _jpeg(top / "train" / wnid / "images" / f"{wnid}_9.JPEG", seed=10 * index, grey=index == 1)
        _jpeg(top / "train" / wnid / "images" / f"{wnid}_10.JPEG", seed=10 * index + 1)
        (top / "train" / wnid / f"{wnid}_boxes.txt").write_text(f"{wnid}_9.JPEG\t0\t0\t63\t63\n")
    for index, (name, _) in enumerate(VAL):
        _jpeg(top / "val" / "images" / name, seed=100 + index, grey=name == "val_2.JPEG")
    (top / "val" / "val_annotations.txt").write_text(
        "".join(f"{name}\t{wnid}\t1\t2\t40\t50\n" for name, wnid in VAL))
    _jpeg(top / "test" / "images" / "test_0.JPEG", seed=200)  # unlabelled: never read
    return tmp_path


def test_train_split_labels_names_order_and_pixels(root):
    top = root / "tinyimagenet" / "tiny-imagenet-200"
    got = data.read_tiny_imagenet(top, "train")
    order = [top / "train" / wnid / "images" / f"{wnid}_{k}.JPEG" for wnid in SORTED for k in (10, 9)]
    assert got.files == tuple(str(path) for path in order)
    np.testing.assert_array_equal(got.labels, [0, 0, 1, 1, 2, 2])
    assert got.labels.dtype == np.int64
    assert got.class_names == ("goldfish, Carassius auratus", "n02085620", "coral reef")
    assert got.images.dtype == np.uint8 and got.images.shape == (6, 3, 64, 64)
    for index, path in enumerate(order):
        np.testing.assert_array_equal(got.images[index], _decoded(path))
    grey = got.images[SORTED.index("n01443537") * 2 + 1]  # n01443537_9.JPEG was saved greyscale
    assert np.array_equal(grey[0], grey[1]) and np.array_equal(grey[0], grey[2])


def test_test_split_is_the_official_validation_set(root):
    top = root / "tinyimagenet" / "tiny-imagenet-200"
    got = data.read_tiny_imagenet(str(top), "test")
    names = sorted(name for name, _ in VAL)
    assert got.files == tuple(str(top / "val" / "images" / name) for name in names)
    by_name = dict(VAL)
    np.testing.assert_array_equal(got.labels, [SORTED.index(by_name[name]) for name in names])
    assert got.images.shape == (4, 3, 64, 64)
    for index, name in enumerate(names):
        np.testing.assert_array_equal(got.images[index], _decoded(top / "val" / "images" / name))
    assert not any("test_0" in file for file in got.files)


def test_load_subsets_and_normalises_with_the_documented_mean_and_std(root):
    top = root / "tinyimagenet" / "tiny-imagenet-200"
    assert data.expected_path("tinyimagenet", root) == top
    assert "tinyimagenet" in data.DATASETS
    ds = data.load("tinyimagenet", root=root, split="test", n=2, seed=3)
    chosen = np.random.default_rng(3).permutation(4)[:2]  # the documented subset
    np.testing.assert_array_equal(ds.indices, chosen)
    names = sorted(name for name, _ in VAL)
    assert ds.x.shape == (2, 3, 64, 64) and ds.x.dtype == np.float32
    assert ds.y.shape == (2, 200)  # 200 classes wide, whatever the folder holds
    np.testing.assert_array_equal(ds.labels, [SORTED.index(dict(VAL)[names[i]]) for i in chosen])
    assert ds.class_names == ("goldfish, Carassius auratus", "n02085620", "coral reef")
    pixels = _decoded(top / "val" / "images" / names[chosen[1]])
    for channel, (row, col) in ((0, (5, 7)), (1, (63, 0)), (2, (31, 40))):
        by_hand = (pixels[channel, row, col] / 255.0 - MEAN[channel]) / STD[channel]
        assert ds.x[1, channel, row, col] == pytest.approx(by_hand, abs=1e-5)
    flat = data.load("tinyimagenet", root=root, split="train", flatten=True, one_hot=False)
    assert flat.x.shape == (6, 3 * 64 * 64)
    np.testing.assert_array_equal(flat.y, [0, 0, 1, 1, 2, 2])


def test_missing_dataset_folder_is_dataset_missing_and_download_says_how(tmp_path):
    with pytest.raises(data.DatasetMissing, match=re.escape(str(tmp_path / "tinyimagenet"))):
        data.load("tinyimagenet", root=tmp_path, split="test")
    (tmp_path / "tinyimagenet").mkdir()  # present but empty: a plain FileNotFoundError naming the folder
    top = tmp_path / "tinyimagenet" / "tiny-imagenet-200"
    with pytest.raises(FileNotFoundError, match=re.escape(str(top))) as caught:
        data.load("tinyimagenet", root=tmp_path, split="test")
    assert not isinstance(caught.value, data.DatasetMissing)
    with pytest.raises(ValueError, match=r"tiny-imagenet-200\.zip by hand.*" + re.escape(str(tmp_path))):
        data.download("tinyimagenet", tmp_path)


def test_missing_folder_or_a_file_in_its_place(tmp_path):
    absent = tmp_path / "nowhere" / "tiny-imagenet-200"
    with pytest.raises(FileNotFoundError, match=re.escape(str(absent)) + ".*tiny-imagenet-200.zip"):
        data.read_tiny_imagenet(absent, "train")
    a_file = tmp_path / "tiny-imagenet-200.zip"
    a_file.write_bytes(b"PK")
    with pytest.raises(NotADirectoryError, match=re.escape(str(a_file))):
        data.read_tiny_imagenet(a_file, "train")


def test_bad_split(root):
    with pytest.raises(ValueError, match="split='val'.*'test'"):
        data.read_tiny_imagenet(root / "tinyimagenet" / "tiny-imagenet-200", "val")


def test_missing_wnids(root):
    top = root / "tinyimagenet" / "tiny-imagenet-200"
    (top / "wnids.txt").unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(top / "wnids.txt"))):
        data.read_tiny_imagenet(top, "train")


def test_missing_words_falls_back_to_the_wnids(root):
    top = root / "tinyimagenet" / "tiny-imagenet-200"
    (top / "words.txt").unlink()
    assert data.read_tiny_imagenet(top, "test").class_names == tuple(SORTED)


def test_annotation_naming_an_unknown_wnid(root):
    top = root / "tinyimagenet" / "tiny-imagenet-200"
    path = top / "val" / "val_annotations.txt"
    path.write_text(path.read_text() + "val_9.JPEG\tn12345678\t0\t0\t1\t1\n")
    with pytest.raises(ValueError, match=re.escape(repr(str(path))) + r", line 5.*'n12345678'.*wnids\.txt"):
        data.read_tiny_imagenet(top, "test")


def test_image_of_the_wrong_size_names_its_size(root):
    top = root / "tinyimagenet" / "tiny-imagenet-200"
    wrong = top / "val" / "images" / "val_1.JPEG"
    _jpeg(wrong, seed=7, size=(32, 48))
    with pytest.raises(ValueError, match=re.escape(repr(str(wrong))) + r" is 32×48 pixels.*expected 64×64"):
        data.read_tiny_imagenet(top, "test")


def test_class_folder_without_images(root):
    top = root / "tinyimagenet" / "tiny-imagenet-200"
    images = top / "train" / "n02085620" / "images"
    for path in images.iterdir():
        path.unlink()
    (images / "notes.txt").write_text("not an image")
    with pytest.raises(FileNotFoundError, match=re.escape(repr(str(images))) + " holds no images"):
        data.read_tiny_imagenet(top, "train")
    for path in images.iterdir():
        path.unlink()
    images.rmdir()
    with pytest.raises(FileNotFoundError, match=re.escape(repr(str(images))) + " does not exist"):
        data.read_tiny_imagenet(top, "train")


def test_annotated_image_that_is_missing(root):
    top = root / "tinyimagenet" / "tiny-imagenet-200"
    (top / "val" / "images" / "val_2.JPEG").unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(top / "val" / "images" / "val_2.JPEG"))):
        data.read_tiny_imagenet(top, "test")
