"""A run folder on disk: its identity (run.json, checked against the run that opens it),
its finished cells, and the claim a running process holds on it (a lock file), so that
two runs into one folder never compute the same cells twice."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import time
import warnings
from pathlib import Path

from ._config import to_dict
from ._identity import differences, digest
from ._results import (
    CELL_FORMAT,
    RUN_FORMAT,
    CellResult,
    cell_from_json,
    device,
    read_json,
    versions,
    write_json,
)

LOCK_FILE = ".pcscale-lock"

RUN_FILE = "run.json"
CELLS = "cells"


class ConfigMismatch(ValueError):
    """The output folder holds results of another experiment or config."""


def read_run_file(run_file: Path, *, force: bool) -> dict:
    """run.json's content; an unreadable one is an error naming the file, or, with
    `force`, treated as absent (it is rewritten)."""
    try:
        saved = read_json(run_file)
        if not isinstance(saved, dict):
            raise ValueError("not a JSON object")
        return saved
    except (ValueError, OSError) as error:
        if force:
            return {}
        raise ConfigMismatch(
            f"{run_file} is unreadable ({error}); move the folder away, choose another --out, or pass --force "
            "(force=True) to start it again."
        ) from None


def prepare(out_dir: Path, experiment: str, config, data: dict | None, *, preset: str | None,
             force: bool, write: bool = True) -> str:
    """Check the run folder against this run and record it in run.json. Another
    experiment or config is refused (the user asked for something else: a typo in --out
    or --set would otherwise mix or lose results); other data for the same config
    (files placed in, replaced in or removed from the data root) make every cell stale,
    recomputed as the run reaches it, with a warning naming what changed."""
    key = digest(experiment, config)
    if not write:
        return key  # another process (process 0) owns the folder
    run_file = out_dir / RUN_FILE
    saved = {}
    if run_file.exists():
        saved = read_run_file(run_file, force=force)
        if saved.get("digest") != key:
            if not force:
                raise ConfigMismatch(_refusal(out_dir, saved, experiment, config, data, preset))
            shutil.rmtree(out_dir / CELLS, ignore_errors=True)
            shutil.rmtree(out_dir / "figures", ignore_errors=True)
            saved = {}
        elif saved.get("data") != data and any((out_dir / CELLS).glob("*.json")):
            changes = "\n".join("  " + line for line in differences(saved.get("data"), data, prefix="data."))
            warnings.warn(
                f"{out_dir}: the data this run resolves to differ from its last session's (saved → now):\n"
                f"{changes}\nCells computed on other data than these are computed again.", stacklevel=3,
            )
    elif out_dir.exists() and any(path.name != LOCK_FILE for path in out_dir.iterdir()) and not force:
        raise ConfigMismatch(
            f"{out_dir} is not empty and is not a pcscale run folder (no {RUN_FILE}); choose an empty or new "
            "--out, or pass --force (force=True) to write into it."
        )
    session = {"versions": versions(), "device": device(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "preset": preset, "data": data}
    # Every call that wrote cells into this folder is listed, so that a sweep resumed
    # with other versions, on another device or on other data says so.
    write_json(run_file, {
        "format": RUN_FORMAT, "experiment": experiment, "digest": key, "preset": preset,
        "config": to_dict(config), "data": data, "versions": session["versions"], "device": session["device"],
        "sessions": saved.get("sessions", []) + [session],
    })
    return key


def _refusal(out_dir: Path, saved: dict, experiment: str, config, data: dict | None, preset: str | None) -> str:
    """Why a run folder is refused: each setting that differs, as `key: saved → this run`."""
    if saved.get("experiment") != experiment:
        lines = [f"experiment: {saved.get('experiment')} → {experiment}"]
    else:
        lines = differences(saved.get("config"), to_dict(config))
        if saved.get("preset") and preset and saved["preset"] != preset:
            lines.insert(0, f"preset: {saved['preset']} → {preset}")
        lines += differences(saved.get("data"), data, prefix="data.")
    if not lines:  # equal settings under another digest: written by another pcscale version
        lines = [f"digest: {saved.get('digest')} → {digest(experiment, config)}"]
    listed = "\n".join("  " + line for line in lines)
    return (f"{out_dir} holds results of {saved.get('experiment')!r} with another config (saved → this run):\n"
            f"{listed}\nChoose another --out, or pass --force (force=True) to delete those results and start "
            "again.")


def finished(path: Path, experiment: str, key: str | None, data: dict | None, settings: dict) -> CellResult | None:
    """The cell's saved result if its file is complete and belongs to this config, data
    and cell."""
    if not path.exists():
        return None
    try:
        content = read_json(path)
        if not isinstance(content, dict):
            return None
        if content.get("format") != CELL_FORMAT or content.get("experiment") != experiment:
            return None
        if content.get("config_digest") != key or content.get("data") != data:
            return None
        result = cell_from_json(content)
        return result if result.cell.settings == settings else None
    except (ValueError, KeyError, TypeError, AttributeError, OSError):
        return None  # unreadable or foreign: recompute it


class FolderInUse(RuntimeError):
    """Another live process is running into the same run folder."""


class FolderLock:
    """The claim of one process on a run folder: an exclusive advisory lock
    (`flock`) on the folder's lock file, held for the whole run. The operating system
    releases it when the process ends, however it ends, so a lock can never outlive its
    run; the file also records the owner's pid, host and start time, for the message a
    second run gets ([`FolderInUse`][pcscale.experiments.FolderInUse]) and for the
    warning when a run takes over a folder whose last owner was killed. Where `flock`
    does not exist (Windows) the folder is not claimed."""

    def __init__(self, out_dir: Path):
        self.path = Path(out_dir) / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> FolderLock:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            previous = _owner(fd)
            os.close(fd)
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise FolderInUse(
                f"{self.path.parent} is in use by another pcscale run ({_describe(previous)}); two runs into one "
                "folder would compute the same cells twice. Wait for it to finish (then rerun to reuse its cells), "
                f"or choose another --out."
            ) from None
        previous = _owner(fd)
        if previous:
            warnings.warn(f"{self.path.parent}: the last run into this folder ({_describe(previous)}) ended without "
                          "releasing it (killed, or its machine stopped); its finished cells are reused.",
                          stacklevel=4)
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(owner).encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is None:
            return
        import fcntl

        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # an empty lock file: released cleanly
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _owner(fd: int) -> dict:
    """The owner recorded in an open lock file ({} when empty or unreadable)."""
    try:
        content = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (ValueError, OSError):
        return {}
    return content if isinstance(content, dict) else {}


def _describe(owner: dict) -> str:
    if not owner:
        return "owner not recorded yet"
    host = owner.get("host")
    where = "this host" if host == socket.gethostname() else f"host {host}"
    return f"process {owner.get('pid')} on {where}, started {owner.get('started', '?')}"
