"""Progress bars: live on a terminal, whole plain lines on a file or a pipe, and warnings
that never land inside a bar's line (pcscale._progress)."""

import io
import os
import subprocess
import sys
import textwrap
import threading
import warnings

import pytest

from pcscale import _progress
from pcscale._progress import progress_bar


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def _fake_clock(monkeypatch, tick: float) -> None:
    """Each reading of the clock is `tick` seconds after the one before."""
    now = [0.0]

    def clock():
        now[0] += tick
        return now[0]

    monkeypatch.setattr(_progress, "_clock", clock)


def _visible_lines(text: str) -> list[str]:
    """What a terminal shows of each line: the text after its last carriage return
    (a bar redraws itself from the line's start)."""
    return [line.rsplit("\r", 1)[-1] for line in text.split("\n")]


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run `args` with standard output and error piped, decoded without translating
    newlines (text mode would turn every carriage return into a newline)."""
    result = subprocess.run(args, capture_output=True, timeout=120, check=False, **kwargs)
    result.stdout, result.stderr = result.stdout.decode(), result.stderr.decode()
    return result


def _run_python(script: str) -> subprocess.CompletedProcess:
    return _run([sys.executable, "-c", textwrap.dedent(script)])


def test_a_plain_bar_writes_a_bounded_number_of_whole_lines(monkeypatch):
    _fake_clock(monkeypatch, 0.1)  # 1000 updates: about 100 s
    stream = io.StringIO()
    with progress_bar(total=1000, desc="train", unit="step", stream=stream) as bar:
        for step in range(1000):
            bar.set_postfix(loss=f"{1 / (step + 1):.3g}")
            bar.update(1)
    text = stream.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert text.endswith("\n")
    assert 3 <= len(lines) <= 1 + 100 / _progress.PLAIN_INTERVAL + 1  # first, throttled, last
    assert lines[0].startswith("train: 0/1000 steps")
    assert lines[-1].startswith("train: 1000/1000 steps (loss=0.001)")
    assert all(line.startswith("train: ") for line in lines)


def test_plain_inner_bars_are_silent_when_short_and_cell_bars_write_a_line_per_cell(monkeypatch):
    _fake_clock(monkeypatch, 0.01)
    stream = io.StringIO()
    inner = progress_bar(total=100, desc="cell", unit="step", leave=False, stream=stream)
    for _ in range(100):
        inner.update(1)
    inner.close()
    assert stream.getvalue() == ""  # 1 s of work: below the interval, no line at all

    cells = progress_bar(total=3, desc="sweep", unit="cell", initial=1, stream=stream, line_per_update=True)
    for name in ("a", "b"):
        cells.set_postfix_str(name)
        cells.update(1)
    cells.close()
    lines = stream.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines] == ["sweep: 1/3 cells", "sweep: 2/3 cells (a)",
                                                      "sweep: 3/3 cells (b)"]


def test_plain_bar_updates_from_threads_are_all_counted(monkeypatch):
    monkeypatch.setattr(_progress, "PLAIN_INTERVAL", 0.0)  # a line at every update
    stream = io.StringIO()
    bar = progress_bar(total=400, desc="cells", unit="cell", stream=stream)

    def work():
        for _ in range(100):
            bar.update(1)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    bar.close()
    lines = stream.getvalue().splitlines()
    assert bar.n == 400 and len(lines) == 401
    assert all(line.startswith("cells: ") and line.count("/400") == 1 for line in lines)


def test_a_disabled_bar_writes_nothing():
    stream = FakeTerminal()
    before = warnings.showwarning
    with progress_bar(total=3, desc="off", unit="step", disable=True, stream=stream) as bar:
        bar.set_postfix(a=1)
        bar.update(3)
        assert warnings.showwarning is before
    assert stream.getvalue() == ""


def test_a_piped_bar_writes_no_carriage_return():
    result = _run_python("""
        import warnings
        from pcscale._progress import progress_bar
        with progress_bar(total=50, desc="demo", unit="step") as bar:
            for step in range(50):
                bar.set_postfix(step=step)
                bar.update(1)
                if step == 25:
                    warnings.warn("halfway there")
    """)
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr and "\x1b" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith("demo: 0/50 steps") and lines[-1].startswith("demo: 50/50 steps (step=49)")
    assert any(line.startswith("<string>:") and "UserWarning: halfway there" in line for line in lines)


def test_warnings_and_inference_lines_appear_above_a_live_bar():
    # In a fresh interpreter: pytest records warnings rather than showing them.
    result = _run_python("""
        import io, sys, warnings
        from pcscale import _monitor
        from pcscale._progress import progress_bar

        class FakeTerminal(io.StringIO):
            def isatty(self):
                return True

        terminal = FakeTerminal()
        sys.stderr = terminal  # where warnings and inference lines go by default
        with progress_bar(total=10, desc="live", unit="step", stream=terminal, initial=4) as bar:
            bar.update(1)
            warnings.warn("watch out")
            _monitor._write("  inference: step 7")
            bar.update(1)
        sys.stdout.write(terminal.getvalue())
    """)
    assert result.returncode == 0, result.stderr
    shown = _visible_lines(result.stdout)
    assert "\r" in result.stdout  # a live bar
    warning = [line for line in shown if "watch out" in line]
    assert len(warning) == 1 and warning[0].startswith("<string>:") and "UserWarning: watch out" in warning[0]
    assert "  inference: step 7" in shown
    assert any(line.startswith("live:") and "6/10" in line for line in shown)


def test_warnings_are_still_recorded_while_a_live_bar_is_open():
    with pytest.warns(UserWarning, match="recorded"), progress_bar(total=2, desc="live", unit="step",
                                                                    stream=FakeTerminal()):
        warnings.warn("recorded")


def test_showwarning_is_restored_after_close_with_nested_bars_and_threads():
    before = warnings.showwarning
    outer = progress_bar(total=2, desc="outer", unit="cell", stream=FakeTerminal())
    assert warnings.showwarning is not before
    inner = progress_bar(total=2, desc="inner", unit="step", stream=FakeTerminal(), leave=False)
    inner.close()
    assert warnings.showwarning is not before  # the outer bar is still open
    outer.close()
    outer.close()  # closing twice changes nothing
    assert warnings.showwarning is before

    def bars():
        for _ in range(20):
            with progress_bar(total=1, desc="thread", unit="step", stream=FakeTerminal()) as bar:
                bar.update(1)

    threads = [threading.Thread(target=bars) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert warnings.showwarning is before and not _progress._live


def test_an_experiment_run_into_a_pipe_writes_no_carriage_return(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "XLA_FLAGS"}  # one device
    env["PCSCALE_DATA"] = str(tmp_path / "data")
    result = _run(
        [sys.executable, "-m", "pcscale.cli", "run", "width-depth-linear", "--set", "widths=4", "--set",
         "hidden_layers=1", "--set", "seeds=0", "--set", "steps=3", "--set", "dataset=digits", "--no-plot",
         "--out", str(tmp_path / "run")],
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr and "\x1b" not in result.stderr
    assert "width-depth-linear: 1/1 cell (H1-N4-seed0)" in result.stderr
