"""Character-level text corpus reader (tiny-Shakespeare recipe, numpy only)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._errors import read_file_bytes

_BYTE_ORDER_MARK = "\ufeff"


@dataclass(frozen=True)
class TextCorpus:
    """A plain-text corpus as character tokens.

    - `tokens`: `int32` array of shape `(length,)`, one token per character.
    - `vocabulary`: the sorted distinct characters; a character's token is its index here.
    - `path`: the file the corpus was read from.
    """

    tokens: np.ndarray
    vocabulary: str
    path: str


def read_text(path: str | Path) -> TextCorpus:
    """Read a UTF-8 text file as a character-level corpus.

    The vocabulary is the sorted set of distinct characters and each character's token is
    its rank in it (65 characters for tiny-Shakespeare). One leading UTF-8 byte-order mark
    (as some Windows editors write) is dropped, so it is neither a token nor in the
    vocabulary.

    **Arguments:**

    - `path`: the text file (e.g. tiny-Shakespeare's `input.txt`).

    **Returns:**

    A [`TextCorpus`][pcscale.data.TextCorpus].

    **Raises:**

    `FileNotFoundError` when the file is missing; `IsADirectoryError` when `path` is a
    directory; `PermissionError` (or another `OSError`) when the file cannot be read;
    `ValueError` when it is empty (or holds only a byte-order mark) or not valid UTF-8.
    """
    path = Path(path)
    text = _read_utf8(path)
    vocabulary = "".join(sorted(set(text)))
    return TextCorpus(tokens=encode(text, vocabulary), vocabulary=vocabulary, path=str(path))


def _read_utf8(path: Path) -> str:
    raw = read_file_bytes(
        path, "Text", "a text file", inside="input.txt",
        missing="expected a plain-text corpus such as tiny-Shakespeare's 'input.txt'. Check the path.",
    )
    if not raw:
        raise ValueError(
            f"Text file {str(path)!r} is empty (0 bytes); expected a non-empty plain-text "
            "corpus. Check that the file was written or downloaded completely."
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"Text file {str(path)!r} is not valid UTF-8: byte {raw[error.start]:#04x} at byte "
            f"offset {error.start} ({error.reason}); expected UTF-8 text. Convert the file, "
            "e.g. with `iconv -t UTF-8`."
        ) from error
    text = text.removeprefix(_BYTE_ORDER_MARK)  # one leading BOM is a marker, not text
    if not text:
        raise ValueError(
            f"Text file {str(path)!r} holds only a UTF-8 byte-order mark; expected a non-empty "
            "plain-text corpus. Check that the file was written or downloaded completely."
        )
    return text


def encode(text: str, vocabulary: str) -> np.ndarray:
    """Map each character of `text` to its index in `vocabulary`.

    **Arguments:**

    - `text`: the string to encode.
    - `vocabulary`: the characters, each at its token's index (e.g.
      `TextCorpus.vocabulary`).

    **Returns:**

    An `int32` array of shape `(len(text),)`.

    **Raises:**

    `ValueError` naming the characters of `text` that are not in `vocabulary`.
    """
    codes = _code_points(text)
    vocabulary_codes = _code_points(vocabulary)
    order = np.argsort(vocabulary_codes, kind="stable")
    sorted_codes = vocabulary_codes[order]
    positions = np.searchsorted(sorted_codes, codes).clip(max=max(len(vocabulary) - 1, 0))
    found = sorted_codes[positions] == codes if len(vocabulary) else np.zeros(codes.shape, bool)
    if not found.all():
        missing = sorted(set(text) - set(vocabulary))
        raise ValueError(
            f"text holds {len(missing)} character(s) not in the vocabulary: {missing[:20]!r}; "
            f"expected only characters of the vocabulary {vocabulary!r}. Encode with the "
            "vocabulary of a corpus that contains them."
        )
    return order[positions].astype(np.int32)


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype="<u4")


def decode(tokens: np.ndarray, vocabulary: str) -> str:
    """Map each token to its character in `vocabulary`; the inverse of [`encode`][pcscale.data.encode].

    **Arguments:**

    - `tokens`: integer array of any shape (read in row-major order).
    - `vocabulary`: see [`encode`][pcscale.data.encode].

    **Returns:**

    The decoded string.

    **Raises:**

    `ValueError` when a token is not an index into `vocabulary`.
    """
    tokens = np.asarray(tokens).ravel()
    if tokens.size and (
        not np.issubdtype(tokens.dtype, np.integer)
        or tokens.min() < 0
        or tokens.max() >= len(vocabulary)
    ):
        raise ValueError(
            f"tokens of dtype {tokens.dtype} in [{tokens.min()}, {tokens.max()}] are not all "
            f"indices into the vocabulary; expected integers in [0, {len(vocabulary)}). Decode "
            "with the vocabulary the tokens were encoded with."
        )
    return "".join(vocabulary[token] for token in tokens.tolist())
