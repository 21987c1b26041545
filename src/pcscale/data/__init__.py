"""Datasets, offline: readers for the standard on-disk formats, one `load` interface with
the paper's preprocessing, offline defaults, the paper's toy task and augmentation. NumPy
only at import (the toy task draws with a JAX key, as the paper does, and `augment` runs in
JAX: both import it when called)."""

from ._augment import augment as augment, reference_augment as reference_augment
from ._cifar import ImageArrays as ImageArrays, read_cifar as read_cifar
from ._download import REMOTES as REMOTES, download as download
from ._folder import read_image_folder as read_image_folder
from ._idx import read_idx as read_idx
from ._load import (
    DATASETS as DATASETS,
    DatasetMissing as DatasetMissing,
    ImageDataset as ImageDataset,
    expected_path as expected_path,
    load as load,
    load_or_default as load_or_default,
    text_batch as text_batch,
)
from ._root import (
    ENVIRONMENT_VARIABLE as ENVIRONMENT_VARIABLE,
    data_root as data_root,
    default_cache as default_cache,
)
from ._text import TextCorpus as TextCorpus, decode as decode, encode as encode, read_text as read_text
from ._tinyimagenet import read_tiny_imagenet as read_tiny_imagenet
from ._toy import toy as toy

__all__ = [
    "DATASETS", "ENVIRONMENT_VARIABLE", "REMOTES", "DatasetMissing", "ImageArrays", "ImageDataset",
    "TextCorpus", "augment", "data_root", "decode", "default_cache", "download", "encode", "expected_path",
    "load", "load_or_default", "read_cifar", "read_idx", "read_image_folder", "read_text",
    "read_tiny_imagenet", "reference_augment", "text_batch", "toy",
]
