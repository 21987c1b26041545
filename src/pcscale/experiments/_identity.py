"""What identifies a run folder and each cell in it, and how two identities differ.

A run folder belongs to one experiment and one resolved config (the preset's values with
the overrides applied): its digest is saved in run.json, and a run of another config is
refused with the settings that differ named. A cell file is reused only when it was also
computed on the same data: what the config's dataset resolves to on this machine when the
run starts (the dataset itself or the offline fallback, where it was read from, and a
fingerprint of the preprocessed arrays)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from ._config import to_dict

NOT_RECORDED = "(not recorded)"
_ABSENT = object()


def digest(experiment: str, config) -> str:
    """The run folder's key: the experiment's name and every field of its config."""
    text = json.dumps({"experiment": experiment, "config": to_dict(config)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def fingerprint(*arrays: np.ndarray) -> str:
    """A short hash of the arrays' dtypes, shapes and bytes: it changes when any value
    does, unlike a size or a name."""
    hasher = hashlib.blake2b(digest_size=8)
    for array in arrays:
        array = np.ascontiguousarray(array)
        hasher.update(f"{array.dtype.str}{array.shape}".encode())
        hasher.update(array.data)
    return hasher.hexdigest()


def format_value(value: Any) -> str:
    """A saved or current value as `--set` writes it: lists comma-separated, booleans
    true/false, the empty string as "", None as none."""
    if isinstance(value, (list, tuple)):
        return ",".join(format_value(item) for item in value)
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "none"
    if value == "":
        return '""'
    return str(value)


def differences(saved: dict | None, current: dict | None, *, prefix: str = "") -> list[str]:
    """One `key: saved → current` line per key whose value differs, in the order of
    `current`'s keys then any only `saved` has. A key one side lacks reads "(not
    recorded)" there."""
    saved = saved if isinstance(saved, dict) else {}
    current = current if isinstance(current, dict) else {}
    keys = list(current) + [key for key in saved if key not in current]
    lines = []
    for key in keys:
        old = format_value(saved[key]) if key in saved else NOT_RECORDED
        new = format_value(current[key]) if key in current else NOT_RECORDED
        if saved.get(key, _ABSENT) != current.get(key, _ABSENT):
            lines.append(f"{prefix}{key}: {old} → {new}")
    return lines

