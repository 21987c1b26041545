"""The deep-PC benchmark suite: its signal-reach metric against hand-computed cosines and
norms, its verdicts against the numbers they read, every method's quick epoch against
chance, resuming, and the command line."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pcscale as pc
from pcscale.experiments import _bench_table, bench
from pcscale.experiments._bench_suite import load_suite, run_suite
from pcscale.experiments._bench_tasks import TASKS, fit_images
from pcscale.experiments._learners import METHODS, Learner, MethodSettings, signal_reach

SETTINGS = MethodSettings(learning_rate=1e-2, weight_decay=0.0, rtol=1e-12, max_inference_steps=200,
                          fixed_steps=20, step_size=0.1, ipc_iterations=5)


def _two_layer(key):
    """A linear 3 → 4 → 2 network under SP (multipliers 1), MSE, float64."""
    model = pc.nn.mlp(3, 4, 2, 2, activation="linear", parameterisation=pc.SP(), dtype=jnp.float64, key=key)
    for layer in model.layers:
        assert layer.multiplier == 1.0
    return model


def _cos(a, b):
    a, b = np.ravel(a), np.ravel(b)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_signal_reach_equals_hand_computed_cosines_and_adam_norms_on_a_two_layer_network():
    key_model, key_x, key_y = jax.random.split(jax.random.PRNGKey(3), 3)
    model = _two_layer(key_model)
    x = jax.random.normal(key_x, (5, 3), jnp.float64)
    y = jax.random.normal(key_y, (5, 2), jnp.float64)
    w1, w2 = (np.asarray(layer.module.weight) for layer in model.layers)
    xs, ys = np.asarray(x), np.asarray(y)
    # BP: L = (1/B) Σ ½‖y − W2 W1 x‖².
    r = ys - xs @ w1.T @ w2.T
    bp_w2 = -(r.T @ (xs @ w1.T)) / len(xs)
    bp_w1 = -(w2.T @ r.T @ xs) / len(xs)
    # PC at its equilibrium: z1* = (I + W2ᵀW2)⁻¹ (W1 x + W2ᵀ y), per sample.
    z1 = np.linalg.solve(np.eye(4) + w2.T @ w2, (xs @ w1.T + ys @ w2).T).T
    pc_w1 = -((z1 - xs @ w1.T).T @ xs) / len(xs)
    pc_w2 = -((ys - z1 @ w2.T).T @ z1) / len(xs)
    learner = Learner("pc", SETTINGS, model, x, y)
    reach = signal_reach(learner, x, y, probe_rate=1e-3, since=model)
    np.testing.assert_allclose(reach.cosines, [_cos(pc_w1, bp_w1), _cos(pc_w2, bp_w2)], rtol=1e-8)
    np.testing.assert_array_equal(reach.update_norms, [0.0, 0.0])  # nothing learnt yet, and nothing kept
    np.testing.assert_array_equal(np.asarray(learner.model.layers[0].module.weight), w1)
    # After one AdamW step: Adam's first update is η·g/(|g| + ε) per entry (the bias
    # corrections cancel), whose norm is η·√(entries of the layer).
    learner.step(x, y)
    moved = signal_reach(learner, x, y, probe_rate=1e-3, since=model).update_norms
    np.testing.assert_allclose(moved, [1e-2 * math.sqrt(12), 1e-2 * math.sqrt(8)], rtol=1e-5)
    # BP against itself: cosine 1 in every layer.
    bp_reach = signal_reach(Learner("bp", SETTINGS, model, x, y), x, y, probe_rate=1e-3, since=model)
    np.testing.assert_allclose(bp_reach.cosines, [1.0, 1.0], rtol=1e-12)


def _cell(method, depth, accuracy, cosines, *, failed=False):
    history = {"test_accuracy": [accuracy], "seconds": [1.0], "step_seconds": [0.01], "train_loss": [0.5],
               "evaluations_per_step": [10.0], "certified_share": [1.0], "cosines": [cosines],
               "update_norms": [[1.0] * len(cosines)]}
    info = {"method": method, "depth": depth, "dataset": "mnist", "history": history,
            "failure": {"step": 0, "reason": "x"} if failed else None}
    return pc.experiments.CellResult(pc.experiments.Cell(f"{method}-L{depth}", {"method": method, "depth": depth}),
                                     None, info, 1.0)


def test_verdicts_read_the_numbers_of_the_deepest_depth():
    config = bench.BenchConfig(task="deep-resmlp-mnist", depths=(8, 128))
    results = [_cell("bp", 8, 0.95, [1.0, 1.0]), _cell("pc", 8, 0.70, [0.1, 0.1]),
               _cell("bp", 128, 0.95, [1.0, 1.0, 1.0]), _cell("pc", 128, 0.945, [0.99, 0.5, 0.95])]
    text = _bench_table.summarise(config, results)
    assert "PASS  target: certified PC within 0.010 of BP at L = 128: Δ = -0.0050" in text
    assert ("MISS  target: every layer's update cosine with BP ≥ 0.9 at L = 128: smallest 0.500 (layer 2), 1 of 3"
            in text)
    results[-1] = _cell("pc", 128, 0.90, [0.99, 0.95, 0.95])
    text = _bench_table.summarise(config, results)
    assert "MISS  target: certified PC within 0.010 of BP at L = 128: Δ = -0.0500" in text
    assert "PASS  target: every layer's update cosine" in text
    results[-1] = _cell("pc", 128, 0.90, [0.99], failed=True)
    assert "not checked (certified PC failed)" in _bench_table.summarise(config, results)


def test_fit_images():
    x = np.arange(2 * 1 * 8 * 8, dtype=np.float32).reshape(2, 1, 8, 8)
    up = fit_images(x, 32)
    assert up.shape == (2, 1, 32, 32) and up[1, 0, 5, 9] == x[1, 0, 1, 2]
    padded = fit_images(x, 12)
    assert padded.shape == (2, 1, 12, 12) and padded[0, 0, 0, 0] == 0 and padded[0, 0, 2, 2] == x[0, 0, 0, 0]
    assert np.array_equal(fit_images(x, 4), x[:, :, 2:6, 2:6])


def _digits(**extra):
    return ["dataset=digits", "train_size=256", "test_size=297", "batch=32", *[f"{k}={v}" for k, v in extra.items()]]


def test_one_quick_epoch_beats_chance_for_every_method(tmp_path):
    suite = run_suite("mlp-mnist", out=tmp_path, overrides=_digits(), progress=False)
    assert sorted(r.info["method"] for r in suite.results) == sorted(METHODS)
    # 297 test digits: chance is 0.1 with standard deviation √(0.1·0.9/297) ≈ 0.017; ask for 5σ above it.
    for result in suite.results:
        assert result.failure is None, result.failure
        assert result.info["history"]["test_accuracy"][-1] > 0.1 + 5 * 0.0174, result.info["method"]
    pc_cell = next(r for r in suite.results if r.info["method"] == "pc")
    assert pc_cell.info["history"]["certified_share"][-1] == 1.0


def test_an_interrupted_suite_recomputes_nothing_finished(tmp_path):
    overrides = _digits(epochs=1)
    first = run_suite("mlp-mnist", methods=["bp", "pc-fixed"], out=tmp_path, overrides=overrides, progress=False)
    assert sorted(first.computed) == ["bp-L4", "pc-fixed-L4"]
    cell_files = sorted(tmp_path.glob("*/cells/*.json"))
    stamps = {path: path.stat().st_mtime_ns for path in cell_files}
    # "Interrupted" before epc: rerun the whole list; only epc is computed.
    again = run_suite("mlp-mnist", methods=["bp", "pc-fixed", "epc"], out=tmp_path, overrides=overrides,
                      progress=False)
    assert again.computed == ("epc-L4",) and sorted(again.reused) == ["bp-L4", "pc-fixed-L4"]
    assert all(path.stat().st_mtime_ns == stamp for path, stamp in stamps.items())
    assert [r.info["method"] for r in load_suite(tmp_path).results] == ["bp", "pc-fixed", "epc"]


def test_cli_bench_prints_the_table_and_refuses_an_unknown_task(tmp_path, capsys):
    from pcscale.cli import main

    code = main(["bench", "mlp-mnist", "--method", "bp", "--out", str(tmp_path), "--no-plot", "--no-progress",
                 *[arg for o in _digits(epochs=1) for arg in ("--set", o)]])
    out = capsys.readouterr().out
    assert code == 0 and "bench-mlp-mnist" in out and "test acc." in out
    saved = json.loads((tmp_path / "bp" / "run.json").read_text())
    assert saved["config"]["methods"] == ["bp"] and saved["experiment"] == "bench-mlp-mnist"
    # The suite folder reads back as one run: `show` prints its table, `plot` draws its figures.
    assert main(["show", str(tmp_path)]) == 0 and "test acc." in capsys.readouterr().out
    pytest.importorskip("matplotlib")
    assert main(["plot", str(tmp_path)]) == 0
    assert (tmp_path / "figures" / "accuracy.png").is_file() and (tmp_path / "figures" / "signal_reach.png").is_file()
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "no-such-task"])
    assert exit_info.value.code == 2


def test_every_task_has_quick_and_full_presets_and_a_known_architecture():
    for name in TASKS:
        experiment = pc.experiments.get(f"bench-{name}")
        assert set(experiment.presets) == {"quick", "full"}
        quick, full = experiment.preset("quick"), experiment.preset("full")
        assert quick.task == full.task == name and quick.fallback and not full.fallback
        assert full.train_size >= 50_000 and full.test_size == 10_000


def _hand_count(task: str) -> int:
    """Parameters of each task's network at its published size, counted by hand: weights
    plus biases per layer (3×3 convs; ResNet-18 has no conv biases and three 1×1
    projections)."""
    conv = lambda c_in, c_out, bias=True: 9 * c_in * c_out + (c_out if bias else 0)  # noqa: E731
    if task in ("mlp-mnist", "mlp-fashion"):
        return 784 * 128 + 128 + 2 * (128 * 128 + 128) + 128 * 10 + 10
    vgg5 = conv(3, 128) + conv(128, 256) + conv(256, 512) + conv(512, 512)
    vgg7 = conv(3, 128) + conv(128, 128) + conv(128, 256) + conv(256, 256) + conv(256, 512) + conv(512, 512)
    if task == "vgg5-cifar10":
        return vgg5 + 512 * 2 * 2 * 10 + 10
    if task == "vgg5-cifar100":
        return vgg5 + 512 * 2 * 2 * 100 + 100
    if task == "vgg7-cifar10":
        return vgg7 + 512 * 10 + 10
    if task == "vgg7-tinyimagenet":
        return vgg7 + 512 * 4 * 4 * 200 + 200
    assert task == "resnet18-cifar10"
    blocks = 0
    for c_in, c_out in ((64, 64), (64, 128), (128, 256), (256, 512)):
        blocks += conv(c_in, c_out, False) + conv(c_out, c_out, False)  # first block of the stage
        blocks += 2 * conv(c_out, c_out, False)  # second block
        blocks += c_in * c_out if c_in != c_out else 0  # 1×1 projection of a downsampling block
    return conv(3, 64, False) + blocks + 512 * 10 + 10


@pytest.mark.parametrize("name", [t for t in TASKS if t != "deep-resmlp-mnist"])
def test_each_task_builds_its_published_network(name):
    from pcscale.experiments._bench_tasks import build

    task = TASKS[name]
    classes = {"vgg5-cifar100": 100, "vgg7-tinyimagenet": 200}.get(name, 10)
    x_shape = (784,) if task.side is None else (3, task.crop or task.side, task.crop or task.side)

    def make():
        return build(task, 0, x_shape=x_shape, classes=classes, width=128, width_multiplier=1.0, activation="relu",
                     parameterisation=pc.SP(), dtype=jnp.float32, key=jax.random.PRNGKey(0), pooling="max")

    model = jax.eval_shape(make)
    count = sum(leaf.size for leaf in jax.tree.leaves(model) if hasattr(leaf, "shape"))
    assert count == _hand_count(name)
    assert len(model.layers) == task.fixed_depth


def test_deep_resmlp_task_builds_the_residual_mlp_at_every_depth():
    from pcscale.experiments._bench_tasks import build

    for depth in (8, 32):
        model = build(TASKS["deep-resmlp-mnist"], depth, x_shape=(784,), classes=10, width=16, width_multiplier=1.0,
                      activation="tanh", parameterisation=pc.MuPC(), dtype=jnp.float32, key=jax.random.PRNGKey(0))
        assert len(model.layers) == depth
        assert [layer.skip for layer in model.layers] == [False] + [True] * (depth - 2) + [False]


@pytest.mark.slow
def test_a_cnn_task_trains_with_augmentation_and_certifies_with_average_pooling(tmp_path):
    suite = run_suite("vgg5-cifar10", methods=["bp", "pc"], out=tmp_path, progress=False,
                      overrides=["dataset=digits", "train_size=64", "test_size=64", "batch=32",
                                 "width_multiplier=0.03", "solver=auto"])
    pc_cell = next(r for r in suite.results if r.info["method"] == "pc")
    assert pc_cell.failure is None and pc_cell.info["history"]["certified_share"][-1] == 1.0
    # Channels 128, 256, 512, 512 × 0.03 → 4, 8, 15, 15 (rounded); one grey channel in, readout 15·2·2 → 10.
    convs = sum(9 * a * b + b for a, b in ((1, 4), (4, 8), (8, 15), (15, 15)))
    assert pc_cell.info["parameters"] == convs + 15 * 2 * 2 * 10 + 10


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TASKS))
def test_every_quick_preset_beats_chance_for_every_method(name, tmp_path):
    suite = run_suite(name, out=tmp_path, progress=False, overrides=["dataset=digits"])
    depths = len({r.info["depth"] for r in suite.results})
    assert sorted(r.info["method"] for r in suite.results) == sorted(METHODS * depths)
    for result in suite.results:  # 297 test digits: 5σ above chance, as above
        assert result.failure is None, result.failure
        assert result.info["history"]["test_accuracy"][-1] > 0.1 + 5 * 0.0174, result.cell.name
