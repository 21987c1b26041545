import os

# Four CPU devices for the data-parallel and cell-parallel tests (docs/scaling.md). XLA
# reads the flag when JAX first starts its backend, so it is set before importing jax.
# Single-device code runs on device 0 as before.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()

# The default run is dominated by XLA compiling many small programs: LLVM's optimisation
# level 0 compiles them about 30% faster, and the tests assert mathematics, not speed
# (benchmarks/ measures speed, at XLA's default level). A level given in XLA_FLAGS wins.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

# Every pcscale module is imported through jaxtyping's import hook, which checks its
# annotations at run time with beartype: array shapes and dtypes, and every other hint
# (with PEP 484's numeric tower, so an int passes where a float is annotated). Installed
# here, before anything imports pcscale.
from jaxtyping import install_import_hook  # noqa: E402

install_import_hook("pcscale", "beartype.beartype(conf=beartype.BeartypeConf(is_pep484_tower=True))")

import jax  # noqa: E402

# Tests that need float64 ask for it through dtypes; enabling x64 up front lets them.
# Library defaults stay float32 (builders take an explicit dtype).
jax.config.update("jax_enable_x64", True)
# Implicit broadcasting between arrays of different ranks is an error in the tests, so
# that a missing axis cannot hide behind NumPy's rank promotion.
jax.config.update("jax_numpy_rank_promotion", "raise")


from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

# Development and CI data (../shared/data beside the repository); a user's machine does
# not have it, and the experiments then fall back to their offline defaults.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def unchecked():
    """Switch the runtime annotation checks off for a test of pcscale's own validation
    of a wrongly typed argument (a user without beartype meets that validation; with the
    checks on, beartype would refuse the call first)."""
    from helpers import annotations_unchecked

    with annotations_unchecked():
        yield


@pytest.fixture
def data_root(tmp_path_factory, monkeypatch) -> Path:
    """A data root for experiment runs, set as $PCSCALE_DATA: ../shared/data's MNIST and
    Shakespeare text under the names `pcscale.data` reads (mnist/, tinyshakespeare/
    input.txt) when that folder exists, else an empty folder (offline defaults)."""
    root = tmp_path_factory.mktemp("data-root")
    if (SHARED_DATA / "mnist").is_dir():
        os.symlink(SHARED_DATA / "mnist", root / "mnist")
    if (SHARED_DATA / "shakespeare" / "input.txt").is_file():
        (root / "tinyshakespeare").mkdir()
        os.symlink(SHARED_DATA / "shakespeare" / "input.txt", root / "tinyshakespeare" / "input.txt")
    monkeypatch.setenv("PCSCALE_DATA", str(root))
    return root
