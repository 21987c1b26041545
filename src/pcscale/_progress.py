"""Progress bars that suit where they are written.

`progress_bar` is the one factory pcscale's loops use. What it shows depends on its
stream (standard error by default):

- **A terminal** (`stream.isatty()`), or a Jupyter kernel's standard error: a live tqdm
  bar. While one is open on a terminal, warnings are written through `tqdm.write`, each
  whole on its own line above the bars (`warnings.showwarning` is wrapped when the first
  live bar opens and restored when the last one closes), and so are the inference loop's
  progress lines (`write`, which `_monitor` uses).
- **A file or a pipe**: no tqdm, no carriage returns, no escape sequences, only whole
  lines (each written at once with its newline) of the form
  `desc: n/total units (postfix), elapsed`:

  - a bar with `leave=True` writes a line when it opens, at most one every
    `PLAIN_INTERVAL` seconds as it advances, and a last one when it closes (unless the
    line before already showed the same count and postfix);
  - a bar with `leave=False` (an inner bar, such as the steps of one experiment cell)
    writes only the throttled lines: none for work shorter than `PLAIN_INTERVAL`;
  - `line_per_update=True` (an experiment's cells: few, slow units) writes a line after
    every update, with the postfix (the runner's: the cell just finished).

A disabled bar (`disable=True`) is one shared object whose methods do nothing.
"""

from __future__ import annotations

import sys
import threading
import time
import warnings
from typing import TextIO, cast

PLAIN_INTERVAL = 10.0  # seconds between a plain bar's lines
_clock = time.monotonic  # tests replace it with a fake clock

_lock = threading.Lock()  # guards _live and the wrapped showwarning
_write_lock = threading.Lock()  # one plain line at a time
_live: list = []  # the live terminal bars now open, innermost last
_saved_showwarning = None  # warnings.showwarning before the first live bar opened


def progress_bar(*, total: int | None, desc: str, unit: str, disable: bool = False, leave: bool = True,
                 initial: int = 0, stream=None, line_per_update: bool = False):
    """A progress bar over `total` units named `unit`, labelled `desc`, starting at
    `initial`, on `stream` (standard error when None). It has `update(n=1)` (safe from
    several threads), `set_postfix(**values)`, `set_postfix_str(text)` and `close()`, and
    is a context manager. The module's docstring says what it writes where."""
    if disable:
        return _DISABLED
    stream = sys.stderr if stream is None else stream
    if _is_terminal(stream) or (stream is sys.stderr and _in_notebook()):
        return _LiveBar(total, desc, unit, leave, initial, stream)
    return _PlainBar(total, desc, unit, leave, initial, stream, line_per_update)


def write(text: str, stream=None) -> None:
    """Write `text` and a newline to `stream` (standard error when None) in one piece:
    through `tqdm.write` while a live bar is open on a terminal, so that it lands above
    the bars rather than inside one."""
    stream, text = sys.stderr if stream is None else stream, text.rstrip("\n")
    if _live:
        from tqdm import tqdm

        tqdm.write(text, file=stream)
        return
    with _write_lock:
        stream.write(text + "\n")
        stream.flush()


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


def _in_notebook() -> bool:
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    return shell is not None and hasattr(shell, "kernel")


class _Disabled:
    """A bar that shows nothing; the others' base (the context manager closes the bar)."""

    n = 0

    def update(self, n=1):
        pass

    def set_postfix(self, **values):
        if self is not _DISABLED:
            self.set_postfix_str(", ".join(f"{key}={value}" for key, value in values.items()))

    def set_postfix_str(self, text=""):
        pass

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


_DISABLED = _Disabled()


class _LiveBar(_Disabled):
    """A tqdm bar, behind a lock so that `update` may be called from several threads; while
    one is open on a terminal, warnings are written above the bars."""

    def __init__(self, total, desc, unit, leave, initial, stream):
        from tqdm.auto import tqdm

        global _saved_showwarning
        self._open, self.stream, self._update_lock = _is_terminal(stream), stream, threading.Lock()
        self._bar = tqdm(total=total, desc=desc, unit=unit, leave=leave, initial=initial, file=stream)
        with _lock:
            if self._open and not _live:
                _saved_showwarning, warnings.showwarning = warnings.showwarning, _showwarning
            if self._open:
                _live.append(self)

    def update(self, n=1):
        with self._update_lock:
            self._bar.update(n)

    def set_postfix_str(self, text=""):
        with self._update_lock:
            self._bar.set_postfix_str(text)

    def close(self):
        global _saved_showwarning
        with _lock:
            if self._open:  # a terminal bar, closed for the first time
                self._open = False
                _live.remove(self)
                if not _live:
                    if warnings.showwarning is _showwarning:  # else someone replaced it since: keep theirs
                        warnings.showwarning = _saved_showwarning
                    _saved_showwarning = None
        with self._update_lock:
            self._bar.close()


def _showwarning(message, category, filename, lineno, file=None, line=None):
    """`warnings.showwarning` while a live bar is open: the default way of showing a
    warning (or of recording it, inside `warnings.catch_warnings(record=True)`), with the
    text sent through `tqdm.write` to the innermost bar's stream. A showwarning someone
    installed before the bar opened is called unchanged."""
    with _lock:
        previous, stream = _saved_showwarning, (_live[-1].stream if _live else None)
    default = getattr(warnings, "_showwarning_orig", None)
    if previous is None or previous is default:
        previous = default or warnings.showwarning
        if file is None and stream is not None:
            # Duck-typed: showing a warning only writes to the file (and may flush it).
            file = cast(TextIO, _AboveBars(stream))
    previous(message, category, filename, lineno, file, line)


class _AboveBars:
    """A file whose writes go through `write`: whole, above the live bars."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text):
        if text.strip():
            write(text, self.stream)

    def flush(self):
        pass


class _PlainBar(_Disabled):
    """Whole lines for a file or a pipe (the module's docstring says when)."""

    def __init__(self, total, desc, unit, leave, initial, stream, line_per_update):
        self.n, self.total, self.desc, self.unit = initial, total, desc, unit
        self.stream, self.leave, self.line_per_update = stream, leave, line_per_update
        self._postfix, self._shown, self._closed = "", None, False
        self._lock = threading.Lock()
        self._start = self._last = _clock()
        if leave:
            self._line(self._start)

    def update(self, n=1):
        with self._lock:
            self.n += n
            now = _clock()
            if self.line_per_update or now - self._last >= PLAIN_INTERVAL:
                self._line(now)

    def set_postfix_str(self, text=""):
        with self._lock:
            self._postfix = str(text)

    def close(self):
        with self._lock:
            if not self._closed and self.leave and self._shown != (self.n, self._postfix):
                self._line(_clock())
            self._closed = True

    def _line(self, now):
        self._last, self._shown = now, (self.n, self._postfix)
        units = self.unit if self.total == 1 or self.unit.endswith("s") else self.unit + "s"
        count = f"{self.n}/{self.total}" if self.total is not None else f"{self.n}"
        postfix = f" ({self._postfix})" if self._postfix else ""
        seconds = now - self._start
        minutes, whole = divmod(int(seconds), 60)
        elapsed = f"{seconds:.1f} s" if seconds < 60 else f"{minutes // 60}:{minutes % 60:02d}:{whole:02d}"
        write(f"{self.desc}: {count} {units}{postfix}, {elapsed}", self.stream)
