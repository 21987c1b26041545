"""Reader for IDX files, the format of MNIST and Fashion-MNIST (numpy only)."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from ._errors import read_file_bytes

_GZIP_MAGIC = b"\x1f\x8b"

# IDX type code -> big-endian numpy dtype, as in the format's specification.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (MNIST / Fashion-MNIST format), gzipped or not.

    Compression is detected from the file's first bytes (the gzip magic `1f 8b`), not from
    its suffix, so `train-images-idx3-ubyte` and `train-images-idx3-ubyte.gz` both work
    whatever they are called.

    **Arguments:**

    - `path`: the IDX file.

    **Returns:**

    A native-endian numpy array with the shape and element type given by the file's
    header (`uint8` for the MNIST images and labels).

    **Raises:**

    `FileNotFoundError` when the file does not exist; `IsADirectoryError` when `path` is
    a directory; `PermissionError` (or another `OSError`) when the file cannot be read;
    `ValueError` when the header is not an IDX header, when the data is shorter or longer
    than the header says, or when the gzip stream is corrupt.
    """
    path = Path(path)
    raw = _read_bytes(path)
    dtype, shape, offset = _parse_header(raw, path)
    return _parse_data(raw, offset, dtype, shape, path)


def _read_bytes(path: Path) -> bytes:
    raw = read_file_bytes(
        path, "IDX", "an IDX file", inside=path.name,
        missing="expected an MNIST-style IDX file such as 'train-images-idx3-ubyte.gz'. Check the data "
        "directory, or download the dataset's official files into it.",
    )
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as error:
        raise ValueError(
            f"IDX file {str(path)!r} starts with the gzip magic bytes but its gzip stream is "
            f"corrupt or truncated ({error}); expected a complete gzip file. Download the file "
            "again."
        ) from error


def _parse_header(raw: bytes, path: Path) -> tuple[np.dtype, tuple[int, ...], int]:
    """Return the element dtype, the shape and the byte offset of the data."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(
            f"IDX file {str(path)!r} has a wrong magic number: its first four bytes are "
            f"{raw[:4].hex(' ') or '(none, the file is empty)'}; expected 00 00, a type code "
            f"in {{{', '.join(f'{code:02x}' for code in _IDX_DTYPES)}}} and the number of "
            "dimensions. Is this an IDX file? Check that the path points at an MNIST-style "
            "file (e.g. 'train-images-idx3-ubyte[.gz]')."
        )
    dtype = _IDX_DTYPES[raw[2]]
    ndim = raw[3]
    offset = 4 + 4 * ndim
    if len(raw) < offset:
        raise ValueError(
            f"IDX file {str(path)!r} is truncated or corrupt: its header announces {ndim} "
            f"dimensions ({offset} header bytes) but the file holds only {len(raw)} bytes. "
            "Download the file again."
        )
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    return dtype, shape, offset


def _parse_data(raw: bytes, offset: int, dtype: np.dtype, shape: tuple[int, ...], path: Path) -> np.ndarray:
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    found = len(raw) - offset
    if found != expected:
        raise ValueError(
            f"IDX file {str(path)!r} is truncated or corrupt: its header announces shape "
            f"{shape} of {dtype.newbyteorder('=').name} ({expected} data bytes) but the file "
            f"holds {found} data bytes. Download the file again."
        )
    data = np.frombuffer(raw, dtype=dtype, offset=offset).reshape(shape)
    return data.astype(dtype.newbyteorder("="))
