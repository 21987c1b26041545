"""Every failure visible: training that goes NaN or diverges, updates that would make the
weights non-finite, the CLI's file-system errors, and two runs into one folder."""

import errno
import json
import math
import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import pcscale as pc
from pcscale import cli, experiments as ex
from pcscale._health import LOSS_GROWTH_LIMIT, final_failure, step_failure
from pcscale.experiments._folder import LOCK_FILE, FolderLock

# One small cell: a linear residual MLP of width 4 on the 8×8 digits, closed-form PC.
SMALL = ["width-depth-linear", "--set", "widths=4", "--set", "hidden_layers=1", "--set", "seeds=0",
         "--set", "steps=6", "--set", "dataset=digits", "--no-plot", "--no-progress"]


def _cell(out: Path) -> dict:
    return json.loads((out / "cells" / "H1-N4-seed0.json").read_text())


# ------------------------------------------------------------------ the shared policy


def _step(fixed_batch=True, **changes):
    values = dict(pc_loss=1.0, bp_loss=1.0, pc_energy=0.5, pc_updated=True, bp_updated=True,
                  result=int(pc.RESULTS.max_steps._value))
    values.update(changes)
    return step_failure(3, values, initial_pc_loss=1.0, initial_bp_loss=2.0, fixed_batch=fixed_batch)


def test_policy_flags_each_kind_of_failure_at_its_step():
    assert _step() is None
    assert "PC loss is nan" in _step(pc_loss=math.nan).reason
    assert "PC energy is inf" in _step(pc_energy=math.inf).reason
    assert "BP twin's loss is -inf" in _step(bp_loss=-math.inf).reason
    assert "inference diverged" in _step(pc_updated=False, result=int(pc.RESULTS.diverged._value)).reason
    assert "new weights" in _step(pc_updated=False).reason
    assert "BP twin's update was refused" in _step(bp_updated=False).reason
    # With changing batches a refusal is skipped, not a failure; a NaN loss still is one.
    assert _step(fixed_batch=False, pc_updated=False, bp_updated=False) is None
    assert _step(fixed_batch=False, pc_loss=math.nan) is not None
    assert _step(pc_loss=math.nan).step == 3
    # Growth: just below the limit passes, just above fails (BP's initial loss is 2).
    assert _step(pc_loss=0.99 * LOSS_GROWTH_LIMIT) is None
    grown = _step(bp_loss=2.01 * LOSS_GROWTH_LIMIT)
    assert "BP twin's loss grew from 2 to 2.01e+06" in grown.reason and "diverged" in grown.reason
    assert final_failure(7, pc_loss=1.0, bp_loss=math.nan, initial_pc_loss=1.0, initial_bp_loss=1.0).step == 7
    assert final_failure(7, pc_loss=1.0, bp_loss=1.0, initial_pc_loss=1.0, initial_bp_loss=1.0) is None


# ------------------------------------------------------- non-finite updates are refused


def _linear_problem(dtype=jnp.float32):
    model = pc.nn.residual_mlp(5, 8, 2, 3, parameterisation=pc.MuPC(), activation="linear",
                               key=jax.random.PRNGKey(0), dtype=dtype)
    x = jax.random.normal(jax.random.PRNGKey(1), (6, 5), dtype)
    y = jax.random.normal(jax.random.PRNGKey(2), (6, 2), dtype)
    return model, x, y


def _params(model):
    return eqx.filter(model, eqx.is_array)


def _same(a, b) -> bool:
    return all(bool(jnp.array_equal(u, v)) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_an_update_making_the_weights_infinite_is_refused_by_pc_and_bp_steps():
    model, x, y = _linear_problem()
    # A finite gradient times an infinite rate: the gradient passes, the new weights do not.
    optimiser = optax.scale(jnp.inf)
    state = optimiser.init(_params(model))
    solver = pc.ConjugateGradient(rtol=1e-5)
    new, _, metrics = pc.pc_step(model, state, x, y, optimiser=optimiser, solver=solver)
    assert bool(jnp.isfinite(metrics.grad_norm)) and not bool(metrics.updated)
    assert _same(_params(new), _params(model))
    new, _, metrics = pc.bp_step(model, state, x, y, optimiser=optimiser)
    assert not bool(metrics.updated) and _same(_params(new), _params(model))


def _nan_state_optimiser() -> optax.GradientTransformation:
    """Finite updates (plain SGD) but a state that becomes NaN."""

    def init(params):
        return jnp.zeros(())

    def update(updates, state, params=None):
        return jax.tree.map(lambda g: -0.01 * g, updates), state + jnp.nan

    return optax.GradientTransformation(init, update)


def test_an_update_making_the_optimiser_state_non_finite_is_refused():
    model, x, y = _linear_problem()
    optimiser = _nan_state_optimiser()
    state = optimiser.init(_params(model))
    new, new_state, metrics = pc.bp_step(model, state, x, y, optimiser=optimiser)
    assert not bool(metrics.updated) and float(new_state) == 0.0
    assert _same(_params(new), _params(model))


def test_train_stops_at_the_first_failure_and_says_where_and_why():
    model, x, y = _linear_problem()
    optimiser = optax.scale(jnp.inf)
    with pytest.warns(UserWarning, match=r"training failed at step 0: the PC update was refused because its "
                                         r"gradient, the new weights"):
        run = pc.train(model, (x, y), optimiser=optimiser, solver=pc.ConjugateGradient(rtol=1e-5), steps=5,
                       progress=False)
    assert run.failed and run.failure.step == 0
    assert run.history.pc.loss.shape == (1,)  # stopped at the failing step
    assert _same(_params(run.pc_model), _params(model))  # nothing non-finite was applied


def test_train_flags_a_loss_that_explodes_while_staying_finite():
    model, x, y = _linear_problem(jnp.float64)  # float64: the loss stays finite
    optimiser = pc.make_optimiser(model, pc.SGD(1e3))
    with pytest.warns(UserWarning, match="the PC loss grew from"):
        run = pc.train(model, (x, y), optimiser=optimiser, solver=pc.ConjugateGradient(rtol=1e-5), steps=6,
                       progress=False)
    assert run.failed
    losses = np.asarray(run.history.pc.loss)
    t = run.failure.step
    # The first step whose loss passes the limit, by hand, is where it stopped.
    assert t == len(losses) - 1 and losses[t] > LOSS_GROWTH_LIMIT * losses[0]
    assert np.all(losses[:t] <= LOSS_GROWTH_LIMIT * losses[0])


# --------------------------------------------------------------- failed cells in the CLI


def test_nan_training_exits_1_marks_the_cell_failed_and_prints_no_conclusion(tmp_path, capsys):
    out = tmp_path / "nan"
    with pytest.warns(UserWarning, match="training failed at step 1"):
        code = cli.main(["run", *SMALL, "--set", "learning_rate=1e30", "--set", "float64=false",
                         "--out", str(out)])
    assert code == 1
    printed = capsys.readouterr()
    assert "FAILED: 1 of 1" in printed.out and "H1-N4-seed0: failed at step 1: the PC loss is nan" in printed.out
    assert "The paper's claims" not in printed.out and "→ nan" not in printed.out
    assert "exit status 1" in printed.err
    cell = _cell(out)
    assert cell["status"] == "failed" and cell["failure"]["step"] == 1
    assert cell["metrics"]["pc_loss"][2:] == [None] * 4  # stopped: no step after the failure
    # `show` reads the failure back from the file, and exits 1 too.
    assert cli.main(["show", str(out)]) == 1
    assert "failed at step 1" in capsys.readouterr().out


def test_a_finite_but_exploding_loss_is_a_failed_cell(tmp_path, capsys):
    out = tmp_path / "big"
    with pytest.warns(UserWarning, match="grew from"):
        code = cli.main(["run", *SMALL, "--set", "learning_rate=1e6", "--set", "float64=true", "--out", str(out)])
    assert code == 1
    cell = _cell(out)
    losses = [v for v in cell["metrics"]["pc_loss"] if v is not None]
    assert cell["status"] == "failed" and losses[-1] > LOSS_GROWTH_LIMIT * losses[0]
    capsys.readouterr()


def test_a_healthy_cell_is_ok_in_its_file_and_old_files_are_judged_on_read(tmp_path, capsys):
    out = tmp_path / "ok"
    assert cli.main(["run", *SMALL, "--out", str(out)]) == 0
    cell = _cell(out)
    assert cell["status"] == "ok" and cell["failure"] is None
    # A file written before failures were recorded (no "status"), with a NaN loss: read
    # back as failed, at the step the policy finds.
    del cell["status"], cell["failure"]
    cell["metrics"]["pc_loss"][4] = None
    (out / "cells" / "H1-N4-seed0.json").write_text(json.dumps(cell))
    run = ex.load_run(out)
    assert [r.failure.step for r in run.failed] == [4]
    capsys.readouterr()


# ------------------------------------------------------------ file-system errors, one line


def test_out_at_a_file_or_below_a_file_is_one_line_with_the_path_and_the_fix(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for out in (blocker, blocker / "below"):
        with pytest.raises(SystemExit) as exit_:
            cli.main(["run", *SMALL, "--out", str(out)])
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert str(out) in err and "choose another --out" in err and "Traceback" not in err


def test_a_read_only_folder_is_reported_with_the_path_and_the_fix(tmp_path, capsys, monkeypatch):
    target = tmp_path / "read-only" / "run"

    def refuse(self, *args, **kwargs):  # what a read-only folder does (root ignores chmod)
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["run", *SMALL, "--out", str(target)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert str(target) in err and "Permission denied" in err and "choose a folder you own" in err


def test_a_full_disk_keeps_finished_cells_and_says_so(tmp_path, capsys, monkeypatch):
    out = tmp_path / "full"
    args = ["run", *SMALL, "--set", "widths=4,8", "--out", str(out)]
    real_write = Path.write_text
    written = []

    def fill_up(self, text, *a, **k):
        if "cells" in self.parts and written:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # a failed write names no file
        if "cells" in self.parts:
            written.append(self)
        return real_write(self, text, *a, **k)

    monkeypatch.setattr(Path, "write_text", fill_up)
    with pytest.raises(SystemExit) as exit_:
        cli.main(args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "H1-N8-seed0.json" in err and "the same command resumes" in err
    assert not list((out / "cells").glob(".partial-*"))  # no half-written file left behind
    assert json.loads((out / "cells" / "H1-N4-seed0.json").read_text())["status"] == "ok"
    monkeypatch.setattr(Path, "write_text", real_write)
    assert cli.main(args) == 0
    assert "1 finished cells reused" in capsys.readouterr().out


def test_debug_shows_the_traceback(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(FileExistsError):
        cli.main(["run", *SMALL, "--out", str(blocker), "--debug"])
    with pytest.raises(FileExistsError):
        cli.main(["--debug", "run", *SMALL, "--out", str(blocker)])


# ------------------------------------------------------------------ a claimed run folder

HOLD = """
import json, sys, time
from pathlib import Path
from pcscale.experiments._folder import FolderLock
lock = FolderLock(Path(sys.argv[1])).__enter__()
if len(sys.argv) > 2:  # pretend to be on another host (the record is only for the message)
    lock.path.write_text(json.dumps({"pid": 4242, "host": sys.argv[2], "started": "t"}))
print("held", flush=True)
time.sleep(60)
"""


def _holder(folder: Path, *extra: str) -> subprocess.Popen:
    """Another process that claims `folder` and keeps it until killed."""
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), *extra], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_folder_claimed_by_a_live_run_is_refused(tmp_path, capsys):
    out = tmp_path / "busy"
    out.mkdir()
    owner = _holder(out)
    try:
        with pytest.raises(SystemExit) as exit_:
            cli.main(["run", *SMALL, "--out", str(out)])
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert f"in use by another pcscale run (process {owner.pid} on this host" in err
        assert "choose another --out" in err
        assert not (out / "cells").exists()  # nothing computed
    finally:
        owner.kill()
        owner.wait()
    # The claim dies with its process: the same command now runs, warning that the last
    # owner ended without releasing the folder.
    with pytest.warns(UserWarning, match=f"process {owner.pid} on this host.*ended without releasing"):
        assert cli.main(["run", *SMALL, "--out", str(out)]) == 0
    assert (out / LOCK_FILE).read_text() == ""  # released cleanly
    capsys.readouterr()


def test_a_claim_from_another_host_is_refused_naming_the_host(tmp_path):
    owner = _holder(tmp_path, "elsewhere.example")
    try:
        with pytest.raises(ex.FolderInUse, match="process 4242 on host elsewhere.example"):
            FolderLock(tmp_path).__enter__()
    finally:
        owner.kill()
        owner.wait()


def test_two_claims_on_one_folder_exclude_each_other_within_one_process(tmp_path):
    with FolderLock(tmp_path):
        owner = json.loads((tmp_path / LOCK_FILE).read_text())
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
        with pytest.raises(ex.FolderInUse, match="in use by another pcscale run"):
            FolderLock(tmp_path).__enter__()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # released cleanly: no "ended without releasing" warning
        with FolderLock(tmp_path):
            pass


# --------------------------------------------------------------- unreadable data via the CLI


def _mnist_root(tmp_path: Path, shared: Path) -> Path:
    """A data root whose mnist/ links the real files."""
    folder = tmp_path / "root" / "mnist"
    folder.mkdir(parents=True)
    for path in shared.glob("*-ubyte*"):
        os.symlink(path, folder / path.name)
    return folder


@pytest.fixture
def mnist_files(data_root) -> Path:
    if not (data_root / "mnist").is_dir():
        pytest.skip("needs MNIST (../shared/data)")
    return (data_root / "mnist").resolve()


def test_a_folder_where_an_idx_file_should_be_is_named_as_such(tmp_path, capsys, monkeypatch, mnist_files):
    folder = _mnist_root(tmp_path, mnist_files)
    images = folder / "train-images-idx3-ubyte.gz"
    images.unlink()
    images.mkdir()
    monkeypatch.setenv("PCSCALE_DATA", str(folder.parent))
    with pytest.raises(SystemExit) as exit_:
        cli.main(["run", *SMALL, "--set", "dataset=mnist", "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"IDX path '{images}' is a directory, not an IDX file" in err and "put the IDX file" in err


def test_an_unreadable_mnist_file_is_one_line_with_the_chmod_that_fixes_it(tmp_path, capsys, monkeypatch,
                                                                          mnist_files):
    folder = _mnist_root(tmp_path, mnist_files)
    monkeypatch.setenv("PCSCALE_DATA", str(folder.parent))
    real = Path.read_bytes

    def denied(self):  # what a file without read permission does (root ignores chmod)
        if "labels" in self.name:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["run", *SMALL, "--set", "dataset=mnist", "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "train-labels-idx1-ubyte.gz" in err and "permission denied" in err and "chmod u+r" in err
    assert "Traceback" not in err


def test_with_changing_batches_a_refused_update_is_skipped_and_counted_not_a_failure():
    key_model, key_x = jax.random.split(jax.random.PRNGKey(6))
    model = pc.nn.residual_mlp(4, 8, 2, 4, parameterisation=pc.MuPC(), key=key_model)
    x = jax.random.normal(key_x, (5, 4))
    y = jax.nn.one_hot(jnp.arange(5) % 2, 2)
    solver = pc.GradientDescent(step_size=1e3, rtol=1e-6, max_steps=100)  # diverges on every batch
    with pytest.warns(UserWarning, match="3 of 3 PC updates were refused"):
        run = pc.train(model, [(x, y)] * 3, optimiser=pc.make_optimiser(model, pc.Adam(1e-3)), solver=solver,
                       steps=3, progress=False)
    assert not run.failed and run.history.pc.loss.shape == (3,)
    assert not np.asarray(run.history.pc.updated).any() and np.asarray(run.history.bp_updated).all()
    # Given as one fixed batch, the same refusal fails the run at step 0.
    with pytest.warns(UserWarning, match="failed at step 0"):
        fixed = pc.train(model, (x, y), optimiser=pc.make_optimiser(model, pc.Adam(1e-3)), solver=solver,
                         steps=3, progress=False)
    assert fixed.failure.step == 0 and "inference diverged" in fixed.failure.reason


def test_a_check_inside_compiled_code_becomes_its_own_one_line_message():
    model, x, y = _linear_problem()
    bad = x.at[0, 0].set(jnp.nan)
    with pytest.raises(RuntimeError) as caught:
        jax.block_until_ready(eqx.filter_jit(lambda m, a, b: m.loss(a, b))(model, bad, y))
    message = cli._runtime_message(caught.value)
    assert message.startswith("`x` contains NaN or inf values") and "\n" not in message
    assert cli._runtime_message(RuntimeError("something else entirely")) is None  # a real crash keeps its traceback


def test_figures_leave_failed_cells_out(tmp_path, capsys):
    from pcscale.plots._data import trained

    out = tmp_path / "mixed"
    assert cli.main(["run", *SMALL, "--set", "widths=4,16", "--out", str(out)]) == 0
    # Mark one cell failed in its file, as a failed run writes it.
    path = out / "cells" / "H1-N4-seed0.json"
    cell = json.loads(path.read_text())
    cell["status"], cell["failure"] = "failed", {"step": 2, "reason": "the PC loss is nan, not a finite number"}
    path.write_text(json.dumps(cell))
    run = ex.load_run(out)
    assert [r.cell.name for r in run.failed] == ["H1-N4-seed0"]
    assert [r.cell.name for r in trained(run.results)] == ["H1-N16-seed0"]
    text = ex.summary(run)
    assert "H1-N4-seed0: failed at step 2" in text
    cosines = text.splitlines()[text.splitlines().index("H  N = 4           N = 16") + 2]
    assert cosines.split()[:2] == ["1", "—"]  # the failed cell's column is empty, the other is filled
    capsys.readouterr()
