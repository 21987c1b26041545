"""`bench-<task>` — the deep-PC benchmark suite: one task (dataset and published network)
trained by BP and by the PC family with mini-batches over epochs, recording per epoch the
accuracy, cost and inference work, and per layer the weight change over the epoch and the
cosine of the method's update with BP's on the same batch ("signal reach"). `pcscale bench TASK` runs the
methods one results folder each and prints them side by side (docs/bench_suite.md)."""

from __future__ import annotations

import dataclasses
import time
from typing import cast

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from pcscale import data as pcdata

from . import _names
from ._bench_table import summarise
from ._bench_tasks import TASKS, Task, build, centre_crop, fit_images
from ._config import check_config, check_positive, field
from ._learners import MEANING, METHODS, Learner, MethodSettings, accuracy, signal_reach
from ._results import Cell, CellResult
from ._runner import CellContext, Experiment


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """Settings of a `bench-<task>` experiment (`pcscale show-config bench-mlp-mnist`
    lists each with its meaning). Every method trains the same network from the same
    initial weights on the same shuffled mini-batches (and the same augmentation keys)
    with Adam under the parameterisation's per-role rates. Test accuracy is the trained
    network's feedforward pass; times per epoch are the last epoch's (the first
    compiles); the time per step is the median over the epoch's steps, the cell's first
    (compiling) step left out."""

    task: str = field("mlp-mnist", "the task (its network and published numbers)", choices=tuple(TASKS))
    dataset: str = field("mnist", "the image dataset (train and test splits)", choices=tuple(_names.IMAGE_DATASETS))
    data_root: str = field("", 'the folder datasets are read from; "" is $PCSCALE_DATA, or else the cache')
    fallback: bool = field(True, "a missing dataset falls back to the bundled digits instead of being an error")
    train_size: int = field(1024, "training samples (a seeded subset of the train split)")
    test_size: int = field(297, "test samples (a seeded subset of the test split)")
    batch: int = field(32, "B: the mini-batch")
    epochs: int = field(1, "passes over the training samples")
    width: int = field(64, "N: the hidden width of the MLPs")
    width_multiplier: float = field(1.0, "the CNNs' channels relative to the published ones (1: as published)")
    depths: tuple[int, ...] = field((8,), "L: the residual MLP's depths, one cell per method each (other tasks' "
                                          "depth is their architecture's)")
    activation: str = field("tanh", "φ: the activation", choices=tuple(_names.ACTIVATIONS))
    pooling: str = field("average", "the VGGs' 2×2 pooling: max (as published; with it, or ReLU, the PC energy has "
                                    "kinks and certified inference stalls) or average (smooth)",
                         choices=("max", "average"))
    parameterisation: str = field("sp", "the parameterisation (and its optimiser's per-role rates)",
                                  choices=tuple(_names.PARAMETERISATIONS))
    learning_rate: float = field(1e-3, "Adam's η (scaled per role by the parameterisation)")
    weight_decay: float = field(0.0, "Adam's decoupled weight decay (AdamW)")
    schedule: str = field("constant", "η over training: constant, or cosine (decaying to 0 at the last step)",
                          choices=("constant", "cosine"))
    augment: bool = field(True, "CNN tasks: random crops (padding 4, or Tiny ImageNet's 56 of 64) and flips")
    methods: tuple[str, ...] = field(METHODS, "the methods compared, one cell each", choices=METHODS)
    solver: str = field("mixed", "pc's and hybrid's certified solver (mixed: float32 Newton–Krylov, then a float64 "
                                 "polish, so that float32 models certify below their rounding floor; needs JAX's "
                                 "64-bit mode, which the run turns on)", choices=tuple(_names.SOLVERS))
    rtol: float = field(1e-4, "the certified tolerance of pc and hybrid (and the early stop of pc-fixed, epc)")
    max_inference_steps: int = field(500, "the step budget of the certified solves")
    fixed_steps: int = field(20, "T: pc-fixed's and epc's inference steps per batch")
    step_size: float = field(0.1, "β per sample: pc-fixed's, epc's and ipc's activity steps")
    ipc_iterations: int = field(20, "ipc: joint updates per batch")
    probe_rate: float = field(1e-3, "the SGD rate of the signal-reach probe (its cosines do not depend on it but "
                                    "through iPC's joint updates)")
    float64: bool = field(False, "compute in float64 (the run turns JAX's 64-bit mode on)")
    seed: int = field(0, "the seed of the subsets, the batches, the augmentation and the initialisation")

    def __post_init__(self):
        check_config(self)
        check_positive(self, "train_size", "test_size", "batch", "epochs", "width", "width_multiplier", "depths",
                       "learning_rate", "rtol", "max_inference_steps", "fixed_steps", "step_size",
                       "ipc_iterations", "probe_rate")
        if self.weight_decay < 0:
            raise ValueError(f"`weight_decay` must be non-negative, got {self.weight_decay!r}.")
        if self.batch > self.train_size:
            raise ValueError(f"`batch` ({self.batch}) exceeds `train_size` ({self.train_size}); lower the batch or "
                             "raise train_size.")


def _task_presets(task: Task) -> dict[str, BenchConfig]:
    """The quick (minutes on a 2-core CPU, offline) and full (one GPU) presets of a task."""
    base = BenchConfig(task=task.name, dataset=task.dataset)
    if task.architecture == "mlp":
        full = dataclasses.replace(base, fallback=False, train_size=60_000, test_size=10_000, batch=64, epochs=10,
                                   width=128, parameterisation="mupc", learning_rate=0.2, schedule="cosine")
        quick = dataclasses.replace(full, fallback=True, train_size=1024, test_size=297, batch=32, epochs=1, width=64)
    elif task.architecture == "resmlp":
        quick = dataclasses.replace(base, parameterisation="mupc", learning_rate=1.0, width=64, depths=(4, 8, 16),
                                    train_size=1024)
        full = dataclasses.replace(quick, fallback=False, train_size=60_000, test_size=10_000, batch=64, epochs=5,
                                   width=256, depths=(8, 32, 128))
    else:
        quick = dataclasses.replace(base, activation="gelu", width_multiplier=1 / 16, train_size=512,
                                    learning_rate=3e-3)
        full = dataclasses.replace(base, activation="gelu", fallback=False, train_size=50_000, test_size=10_000,
                                   batch=128, epochs=25)
        if task.dataset == "tinyimagenet":
            full = dataclasses.replace(full, train_size=100_000)
        if task.architecture == "resnet18":  # without BatchNorm, β = 0.1 diverges within the quick epoch
            quick, full = (dataclasses.replace(c, step_size=0.02) for c in (quick, full))
    return {"quick": quick, "full": full}


def cells(config: BenchConfig) -> list[Cell]:
    task = TASKS[config.task]
    depths = (task.fixed_depth,) if task.fixed_depth is not None else config.depths
    return [Cell(f"{method}-L{depth}", {"method": method, "depth": depth})
            for depth in depths for method in config.methods]


def _split(config: BenchConfig, task: Task, split: str, n: int):
    loaded, note = _names._load(config.dataset, config.fallback, root=config.data_root or None, split=split, n=n,
                                seed=config.seed, flatten=task.flattened)
    dataset = cast(pcdata.ImageDataset, loaded)
    x = np.asarray(dataset.x)
    if task.side is not None:
        side = task.side if task.crop is None else 64  # Tiny ImageNet keeps its 64 × 64 for random crops
        x = fit_images(x, side)
        if task.crop is not None and split == "test":
            x = centre_crop(x, task.crop)
    return x, np.asarray(dataset.y), {**_names._describe(dataset), "fallback_note": note}


def _augmented(config: BenchConfig, task: Task, key, x):
    """A training batch as the network sees it: cropped and flipped when `augment`."""
    if task.side is None:
        return x
    if task.crop is not None:
        return (pcdata.augment(key, x, padding=0, size=task.crop) if config.augment
                else jnp.asarray(centre_crop(x, task.crop)))
    return pcdata.augment(key, x, padding=4, flip=True) if config.augment else x


def run_cell(config: BenchConfig, cell: Cell, context: CellContext) -> CellResult:
    method, depth = cell.settings["method"], cell.settings["depth"]
    task, dtype = TASKS[config.task], _names.dtype(config.float64)
    x_train, y_train, info = _split(config, task, "train", config.train_size)
    x_test, y_test, _ = _split(config, task, "test", config.test_size)
    x_train, y_train = jnp.asarray(x_train, dtype), jnp.asarray(y_train, dtype)
    x_test, y_test = jnp.asarray(x_test, dtype), jnp.asarray(y_test, dtype)
    key = jax.random.PRNGKey(config.seed)
    model_key, augment_key = jax.random.split(key)
    probe_x = _augmented(config, task, augment_key, x_train[:config.batch])
    probe_y = y_train[:config.batch]
    model = build(task, depth, x_shape=tuple(probe_x.shape[1:]), classes=y_train.shape[1], width=config.width,
                  width_multiplier=config.width_multiplier, activation=config.activation,
                  parameterisation=_names.parameterisation(config.parameterisation), dtype=dtype, key=model_key,
                  pooling=config.pooling)
    steps_per_epoch = len(x_train) // config.batch
    settings = MethodSettings(config.learning_rate, config.weight_decay, config.rtol, config.max_inference_steps,
                              config.fixed_steps, config.step_size, config.ipc_iterations,
                              steps_per_epoch * config.epochs if config.schedule == "cosine" else None,
                              config.solver)
    learner = Learner(method, settings, model, probe_x, probe_y)
    rng = np.random.default_rng(config.seed)
    history: dict[str, list] = {key: [] for key in ("train_loss", "test_accuracy", "seconds", "evaluations_per_step",
                                                    "certified_share", "step_seconds", "update_norms", "cosines")}
    failure, step = None, 0
    for epoch in range(config.epochs):
        order, start, at_start = rng.permutation(len(x_train)), time.perf_counter(), learner.model
        losses, evaluations, certified, timings = [], [], [], []
        for index in range(steps_per_epoch):
            rows = order[index * config.batch:(index + 1) * config.batch]
            xb = _augmented(config, task, jax.random.fold_in(augment_key, step), x_train[rows])
            began = time.perf_counter()
            record = learner.step(xb, y_train[rows])  # returns host floats: the step has finished
            if step > 0:  # the cell's first step compiles
                timings.append(time.perf_counter() - began)
            losses.append(record.loss)
            evaluations.append(record.evaluations)
            if record.certified is not None:
                certified.append(record.certified)
            step += 1
            if not np.isfinite(record.loss) or record.diverged:
                what = f"the loss is {record.loss}" if not np.isfinite(record.loss) else "its inference diverged"
                failure = {"step": step - 1, "reason": f"{method}: {what} in epoch {epoch + 1}"}
                break
            if context.progress and steps_per_epoch >= 20 and (index + 1) % max(1, steps_per_epoch // 10) == 0:
                print(f"  {cell.name}: epoch {epoch + 1}/{config.epochs}, step {index + 1}/{steps_per_epoch}, "
                      f"loss {np.mean(losses[-10:]):.4f}, evaluations/step {np.mean(evaluations[-10:]):.0f}",
                      flush=True)
        history["seconds"].append(time.perf_counter() - start)
        history["train_loss"].append(float(np.mean(losses)))
        history["test_accuracy"].append(accuracy(learner.model, x_test, y_test))
        history["evaluations_per_step"].append(float(np.mean(evaluations)))
        history["step_seconds"].append(float(np.median(timings)) if timings else None)
        history["certified_share"].append(float(np.mean(certified)) if certified else None)
        reach = signal_reach(learner, probe_x, probe_y, probe_rate=config.probe_rate, since=at_start)
        history["update_norms"].append(reach.update_norms)
        history["cosines"].append(reach.cosines)
        if context.progress:
            print(f"  {cell.name}: epoch {epoch + 1}/{config.epochs} test accuracy "
                  f"{history['test_accuracy'][-1]:.4f}, smallest layer cosine with BP "
                  f"{np.nanmin(reach.cosines) if np.any(np.isfinite(reach.cosines)) else float('nan'):.3f}",
                  flush=True)
        if failure is not None:
            break
    info = {**info, "task": task.name, "method": method, "depth": depth, "meaning": MEANING[method], "steps": step,
            "parameters": int(sum(leaf.size for leaf in jax.tree.leaves(eqx.filter(learner.model, eqx.is_array)))),
            "classes": int(y_train.shape[1]), "history": history, "failure": failure,
            "test_accuracy_note": "feedforward pass of the trained network"}
    return CellResult(cell, None, info, float(sum(history["seconds"])))


def _experiment(task: Task) -> Experiment:
    return Experiment(
        name=f"bench-{task.name}",
        description=f"Benchmark suite: {task.architecture} on {task.dataset}, BP against the PC family (pcscale bench)",
        config_type=BenchConfig,
        presets=_task_presets(task),
        cells=cells,
        run_cell=run_cell,
        summarise=summarise,
        figures=("pcscale.plots._bench:plot_bench",),
    )


EXPERIMENTS = tuple(_experiment(task) for task in TASKS.values())
