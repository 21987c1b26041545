"""Safe reading of CIFAR's python pickles: an unpickler that hands the file no real
object at all. It admits only the globals an official batch names (NumPy's array
reconstruction, Python 3's spelling of bytes), each as an inert stand-in that records its
arguments; `realise` then builds every array itself, with `np.frombuffer` from a plain
numeric dtype, a checked shape and raw bytes of the right length. A crafted file can thus
neither call anything nor build an object array whose pointers come from its bytes."""

from __future__ import annotations

import math
import pickle
import reprlib
import sys
from pathlib import Path
from typing import Any

import numpy as np


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle named a global outside `CifarUnpickler`'s list; `qualified` is `module.name`."""

    def __init__(self, module: str, name: str) -> None:
        self.qualified = f"{module}.{name}"
        super().__init__(f"refused global {self.qualified}")


# ------------------------------------------------------------------ stand-ins for NumPy
#
# The unpickler never hands a pickle NumPy itself: `numpy.ndarray(shape, dtype, buffer)`
# called with an object dtype builds an array whose object pointers are the file's bytes
# (dereferenced, and the process crashes or worse, as soon as the array is read), and a
# pickled object dtype whose flags are zeroed slips past NumPy's own checks. Each NumPy
# global resolves instead to a stand-in that only records its arguments and its
# `__setstate__` state; `realise` then builds each array itself, by `np.frombuffer` with a
# dtype from `_PLAIN_CODES` alone.


class _StandIn:
    """A call of the NumPy global `imitates`, recorded and not made: its arguments and the
    state a pickle's BUILD gives it, for `realise` to check. (Every object the unpickler
    hands out defines `__setstate__`, so a BUILD on it never sets attributes instead.)"""

    __slots__ = ("arguments", "built", "state")
    imitates = "numpy"

    def __new__(cls, *arguments: Any) -> _StandIn:  # a pickle's NEWOBJ calls `__new__` alone
        stand_in = object.__new__(cls)
        stand_in.arguments = arguments
        stand_in.state = None
        stand_in.built = False
        return stand_in

    def __init__(self, *arguments: Any) -> None:
        pass  # `__new__` has recorded the arguments

    def __setstate__(self, state: Any) -> None:
        if self.built:
            raise pickle.UnpicklingError(f"{self.imitates} given a state twice")
        self.state, self.built = state, True

    def __repr__(self) -> str:
        return f"<{self.imitates}(…)>"


class _NdarrayStandIn(_StandIn):
    """`numpy.ndarray`: the class `_reconstruct` is given; a direct call is refused."""

    __slots__ = ()
    imitates = "numpy.ndarray"


class _DtypeStandIn(_StandIn):
    """`numpy.dtype(code, align, copy)`, then `__setstate__` with its byte order."""

    __slots__ = ()
    imitates = "numpy.dtype"


class _ReconstructStandIn(_StandIn):
    """NumPy's `_reconstruct(ndarray, shape, typecode)` (protocols 0–4), then `__setstate__`
    with `(version, shape, dtype, is_fortran, rawdata)` (or without the version)."""

    __slots__ = ()
    imitates = "numpy _reconstruct"


class _FrombufferStandIn(_StandIn):
    """NumPy's `_frombuffer(buffer, dtype, shape, order[, axis_order])` (protocol 5)."""

    __slots__ = ()
    imitates = "numpy _frombuffer"


class _Latin1Encode:
    """`_codecs.encode` as Python 3 pickles `bytes` at protocols 0–2 (latin1), and nothing else."""

    __slots__ = ()

    def __new__(cls, text: Any, encoding: Any) -> bytes:  # type: ignore[misc]
        if not isinstance(text, str):
            raise TypeError(f"_codecs.encode of a {type(text).__name__}; expected a str")
        if encoding not in ("latin1", "latin-1"):
            raise pickle.UnpicklingError(f"_codecs.encode to {encoding!r}; expected 'latin1'")
        return text.encode("latin1")

    def __setstate__(self, state: Any) -> None:
        raise pickle.UnpicklingError("_codecs.encode given a state")


class _EmptyBytes:
    """`bytes()`, as Python 3 pickles `b""` at protocols 0–2 (no argument admitted)."""

    __slots__ = ()

    def __new__(cls) -> bytes:  # type: ignore[misc]
        return b""

    def __setstate__(self, state: Any) -> None:
        raise pickle.UnpicklingError("bytes given a state")


# The only globals an official CIFAR batch or meta file (or a copy written by `pickle.dump`
# at any protocol) refers to: NumPy's array reconstruction, under its NumPy 1 (`numpy.core`)
# and NumPy 2 (`numpy._core`) module names, and Python 3's spelling of bytes at protocols
# 0–2. Anything else (`os.system`, `builtins.eval`, …) is refused before it is looked up,
# and none of these is NumPy itself (see `_StandIn`).
ALLOWED_GLOBALS: dict[tuple[str, str], type] = {
    ("numpy", "ndarray"): _NdarrayStandIn,
    ("numpy", "dtype"): _DtypeStandIn,
    **{(f"{package}.multiarray", "_reconstruct"): _ReconstructStandIn for package in ("numpy.core", "numpy._core")},
    **{(f"{package}.numeric", "_frombuffer"): _FrombufferStandIn for package in ("numpy.core", "numpy._core")},
    ("_codecs", "encode"): _Latin1Encode,
    ("__builtin__", "bytes"): _EmptyBytes,
    ("builtins", "bytes"): _EmptyBytes,
}


class CifarUnpickler(pickle.Unpickler):
    """An unpickler that admits only the globals in `ALLOWED_GLOBALS`, so that a crafted
    batch file cannot run code (a plain `pickle.load` would call whatever it names)."""

    def find_class(self, module: str, name: str) -> Any:
        found = ALLOWED_GLOBALS.get((module, name))
        if found is None:
            raise RefusedGlobal(module, name)
        return found


# The dtypes an array in a CIFAR file may have: plain numbers, whatever flags the file pickles
# with them. Object ('O'), void or structured ('V'), string ('S', 'U') and sub-array dtypes
# are refused. Byte order: '<', '>', or native ('|', '=' or none given).
_PLAIN_CODES = ("u1", "i1", "b1", "u2", "i2", "u4", "i4", "u8", "i8", "f4", "f8")
_BYTE_ORDERS = {"<": "<", ">": ">", "|": "=", "=": "=", "": "="}
_EXPECTED = (
    "only dicts, lists, tuples, bytes, numbers and NumPy arrays of plain numbers (dtype "
    f"{', '.join(_PLAIN_CODES)}), as in the official batches"
)
_KINDS = {
    "O": "Python objects, whose addresses would be read from the file",
    "V": "raw or structured records",
    "S": "byte strings",
    "a": "byte strings",
    "U": "unicode strings",
}


def not_official(path: Path, found: str, expected: str = _EXPECTED) -> ValueError:
    return ValueError(
        f"CIFAR file {str(path)!r} {found}; expected {expected}. The file is not an official "
        "CIFAR batch and was not loaded, for safety. Extract the official archive again."
    )


def _ascii(value: Any) -> str | None:
    """`value` as text when it is a str or ASCII bytes (Python 2 strings unpickle as bytes)."""
    if isinstance(value, bytes):
        try:
            return value.decode("ascii")
        except UnicodeDecodeError:
            return None
    return value if isinstance(value, str) else None


def realise(content: Any, path: Path) -> Any:
    """`content` with each stand-in replaced by the array (or dtype) it records, built by
    `_real_array`; every container is copied (dicts, lists, tuples, sets)."""
    done: dict[tuple[int, bool], Any] = {}  # shared objects are converted once
    walking: set[int] = set()

    def real(value: Any, hashable: bool) -> Any:
        # `hashable`: `value` is (inside) a dict key or a set member, where arrays cannot be.
        if isinstance(value, _StandIn):
            if hashable:
                raise not_official(path, "uses a NumPy array or dtype as a dict key or set member")
        elif not isinstance(value, (dict, list, tuple, set, frozenset)):
            return value
        key = (id(value), hashable)
        if key in done:
            return done[key]
        if isinstance(value, _DtypeStandIn):
            result: Any = _real_dtype(value, path)
        elif isinstance(value, _StandIn):
            result = _real_array(value, path)
        else:
            if id(value) in walking:
                raise not_official(path, "holds a container that contains itself")
            walking.add(id(value))
            if isinstance(value, dict):
                result = {real(item, True): real(value[item], False) for item in value}
            elif isinstance(value, (set, frozenset)):
                result = type(value)(real(item, True) for item in value)
            else:
                result = type(value)(real(item, hashable) for item in value)
            walking.discard(id(value))
        done[key] = result
        return result

    return real(content, False)


def _real_array(stand_in: _StandIn, path: Path) -> np.ndarray:
    """The array a `_reconstruct` or `_frombuffer` stand-in records, built by `np.frombuffer`
    from its bytes after checking its dtype (`_real_dtype`), shape and size."""
    arguments, axes = stand_in.arguments, None
    if isinstance(stand_in, _ReconstructStandIn):
        state = stand_in.state
        if len(arguments) != 3 or arguments[0] is not _NdarrayStandIn:
            raise not_official(
                path, f"calls NumPy's _reconstruct with {reprlib.repr(arguments)}",
                "_reconstruct(numpy.ndarray, shape, typecode)",
            )
        if not stand_in.built or not isinstance(state, tuple) or len(state) not in (4, 5):
            raise not_official(
                path, f"gives a pickled array the state {reprlib.repr(state)}",
                "(version, shape, dtype, is_fortran, rawdata)",
            )
        shape, dtype, fortran, raw = state[-4:]
        if fortran not in (0, 1) or not isinstance(fortran, int):
            raise not_official(path, f"gives a pickled array is_fortran={reprlib.repr(fortran)}", "a bool")
        order = "F" if fortran else "C"
    elif isinstance(stand_in, _FrombufferStandIn):
        if stand_in.built or len(arguments) not in (4, 5):
            raise not_official(
                path, f"calls NumPy's _frombuffer with {reprlib.repr(arguments)}",
                "_frombuffer(buffer, dtype, shape, order[, axis_order])",
            )
        raw, dtype, shape, order = arguments[:4]
        axes = arguments[4] if len(arguments) == 5 else None
        order = _ascii(order)
        if order not in ("C", "F", "K") or (order == "K") != (axes is not None) or (
            axes is not None and not _is_permutation(axes, shape)
        ):
            raise not_official(
                path, f"gives _frombuffer the order {reprlib.repr(arguments[3])} and axes "
                f"{reprlib.repr(axes)}", "order 'C' or 'F', or 'K' with a permutation of the axes",
            )
    else:  # `numpy.ndarray(...)` called directly: its buffer may hold object addresses
        raise not_official(
            path, f"calls numpy.ndarray{reprlib.repr(arguments)} directly",
            "arrays pickled by NumPy (through _reconstruct or _frombuffer)",
        )
    dtype = _real_dtype(dtype, path)
    if not (isinstance(shape, tuple) and len(shape) <= 64
            and all(type(size) is int and 0 <= size <= sys.maxsize for size in shape)):
        raise not_official(
            path, f"gives an array the shape {reprlib.repr(shape)}", "a tuple of non-negative ints"
        )
    if not isinstance(raw, (bytes, bytearray)):
        raise not_official(
            path, f"gives the contents of an array of dtype {dtype.str} as a {type(raw).__name__}",
            "the bytes of its numbers",
        )
    size = math.prod(shape) * dtype.itemsize
    if len(raw) != size:
        raise not_official(
            path, f"holds {len(raw)} bytes for an array of shape {shape} and dtype {dtype.str}",
            f"{size} bytes",
        )
    flat = np.frombuffer(bytes(raw), dtype=dtype)
    if dtype.kind == "b":  # a byte other than 0 or 1 is still True
        flat = flat.view(np.uint8) != 0
    try:  # an empty array may still claim dimensions too large for NumPy
        array = flat.reshape(shape, order="C").transpose(axes) if axes is not None else flat.reshape(
            shape, order=order
        )
    except (ValueError, OverflowError) as error:
        raise not_official(path, f"gives an array the shape {reprlib.repr(shape)} ({error})") from None
    return array.astype(dtype.newbyteorder("="))  # a copy, native order, owning its memory


def _is_permutation(axes: Any, shape: Any) -> bool:
    return (isinstance(axes, tuple) and isinstance(shape, tuple)
            and all(type(axis) is int for axis in axes) and sorted(axes) == list(range(len(shape))))


def _real_dtype(stand_in: Any, path: Path) -> np.dtype:
    """The dtype a `numpy.dtype` stand-in records, made from its type code alone (e.g. 'u1',
    'f4'), with the byte order its state gives, when that code is in `_PLAIN_CODES`. Its
    flags, size and alignment are ignored; any fields or sub-array refuse the file."""
    if not isinstance(stand_in, _DtypeStandIn):
        raise not_official(path, f"gives an array the dtype {reprlib.repr(stand_in)}", "a numpy.dtype")
    arguments = stand_in.arguments
    code = _ascii(arguments[0]) if 1 <= len(arguments) <= 3 else None
    if code is None:
        raise not_official(
            path, f"pickles numpy.dtype{reprlib.repr(arguments)}",
            "a dtype named by a type code such as 'u1'",
        )
    order, code = (code[0], code[1:]) if code[:1] and code[0] in "<>|=" else ("", code)
    if stand_in.built:
        order = _state_byte_order(stand_in.state, path)
    if code not in _PLAIN_CODES:
        kind = _KINDS.get(code[:1], "not a plain number type")
        raise not_official(path, f"holds an array of dtype {order + code!r} ({kind})")
    return np.dtype(_BYTE_ORDERS[order] + code)


def _state_byte_order(state: Any, path: Path) -> str:
    """The byte order in a pickled dtype's `__setstate__` state, in any of NumPy's layouts:
    `(endian, subarray, fields, elsize, alignment)` or `(version, endian, subarray, [names,]
    fields, elsize, alignment[, flags[, metadata]])`; a sub-array or fields refuse the file."""
    if not isinstance(state, tuple) or not 5 <= len(state) <= 9:
        raise not_official(
            path, f"gives a dtype the state {reprlib.repr(state)}",
            "NumPy's (version, endian, subarray, names, fields, elsize, alignment, flags)",
        )
    if len(state) == 5:
        endian, structure = state[0], state[1:3]
    elif len(state) == 6:
        endian, structure = state[1], state[2:4]
    else:
        endian, structure = state[1], state[2:5]
    if any(part is not None for part in structure):
        raise not_official(path, "holds an array of a structured or sub-array dtype")
    order = _ascii(endian)
    if order is None or order not in _BYTE_ORDERS or not order:
        raise not_official(
            path, f"gives a dtype the byte order {reprlib.repr(endian)}", "'<', '>', '|' or '='"
        )
    return order
