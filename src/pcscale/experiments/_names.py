"""The one place where the strings of configs and the command line ("mupc", "gd",
"mnist"…) become library objects and data: one dictionary per kind of name, which the
configs' choices, their checks and the command line's help are read from."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import cast

import numpy as np

import pcscale as pc
from pcscale import data as pcdata
from pcscale.data._load import IMAGE_SETS, TEXT_SETS, load_with_fallback_note
from pcscale.nn._activation import ACTIVATIONS as _ALL_ACTIVATIONS


@dataclasses.dataclass(frozen=True)
class ParameterisationName:
    """What a parameterisation's config name stands for: `build(gamma0, alpha, rule)`
    makes it (`alpha`: the depth exponent, None for the class's own; `rule`: the
    `InitStdRule`), `shown` is how summaries write it, and `mu_family` whether it
    belongs to the μP family (its PC–BP gap shrinks with width, and μP's per-role Adam
    rates apply)."""

    build: Callable[[float, float | None, pc.InitStdRule], pc.AbstractParameterisation]
    shown: str
    mu_family: bool


def _standard(kind) -> Callable[[float, float | None, pc.InitStdRule], pc.AbstractParameterisation]:
    """The builder of a parameterisation that takes γ0 and the init rule only."""
    return lambda gamma0, alpha, rule: kind(gamma0=gamma0, init_std_rule=rule)


def _depth_mup(gamma0: float, alpha: float | None, rule: pc.InitStdRule) -> pc.AbstractParameterisation:
    return pc.DepthMuP(alpha=0.5 if alpha is None else alpha, gamma0=gamma0, init_std_rule=rule)


def _sp(gamma0: float, alpha: float | None, rule: pc.InitStdRule) -> pc.AbstractParameterisation:
    return pc.SP(gamma0=gamma0, alpha=alpha, init_std_rule=rule)


PARAMETERISATIONS: dict[str, ParameterisationName] = {
    "mupc": ParameterisationName(_standard(pc.MuPC), "μPC", True),
    "completep": ParameterisationName(_standard(pc.CompleteP), "CompleteP", True),
    "mup": ParameterisationName(_standard(pc.MuP), "μP", True),
    "depthmup": ParameterisationName(_depth_mup, "Depth-μP", True),
    "ntp": ParameterisationName(lambda gamma0, alpha, rule: pc.NTP(gamma0=gamma0), "NTP", False),
    "sp": ParameterisationName(_sp, "SP", False),
}
# The μP family's names: the parameterisations whose PC–BP gap shrinks with width.
MU_FAMILY = tuple(name for name, found in PARAMETERISATIONS.items() if found.mu_family)
# The activations the experiments' `activation` fields accept, name → function.
ACTIVATIONS: dict[str, Callable] = {name: _ALL_ACTIVATIONS[name] for name in ("tanh", "relu", "linear", "gelu")}
# Dataset names → what is read (pcscale.data.load takes the name).
IMAGE_DATASETS: dict[str, str] = {name: spec.description for name, spec in IMAGE_SETS.items()}
TEXT_DATASETS: dict[str, str] = {name: spec.description for name, spec in TEXT_SETS.items()}
# Solver names → summaries, from the one registry (pcscale.SOLVERS; built by pcscale.make_solver).
SOLVERS: dict[str, str] = {name: entry.summary for name, entry in pc.SOLVERS.items()}
# Solver names whose float32 solves may certify in float64 (JAX's 64-bit mode on).
CERTIFY_IN_FLOAT64 = ("auto", "mixed")


def parameterisation(name: str, *, gamma0: float = 1.0, alpha: float | None = None,
                     reference_init_std: bool = False) -> pc.AbstractParameterisation:
    """The parameterisation a config name stands for. `alpha` sets the depth exponent
    of "depthmup" and "sp" (None: SP without a depth factor); `reference_init_std`
    selects `InitStdRule.REFERENCE` (the paper's Fig. 4c transformer init)."""
    if name not in PARAMETERISATIONS:
        raise ValueError(f"unknown parameterisation {name!r}; choose one of {', '.join(PARAMETERISATIONS)}.")
    rule = pc.InitStdRule.REFERENCE if reference_init_std else pc.InitStdRule.STANDARD
    return PARAMETERISATIONS[name].build(gamma0, alpha, rule)


def solver(name: str, model, *, step_size: float, rtol: float, max_steps: int, x=None, y=None,
           progress: bool = False):
    """The inference solver a config name stands for, from the registry
    ([`pcscale.make_solver`][pcscale.make_solver]): "gd" is gradient descent with
    β = `step_size` per sample; "nesterov" and "momentum" use β/2 (momentum needs
    β ≲ 1/λ_max); "auto" is [`pcscale.auto_solver`][pcscale.auto_solver]'s choice for
    the batch (`x`, `y`), which certifies float32 models in float64 when `rtol` is below
    their rounding floor; "mixed" is [`pcscale.MixedPrecision`][pcscale.MixedPrecision]
    around Newton–Krylov. Every solver stops at `rtol` or after `max_steps` of its own
    steps (GD or momentum steps, CG or (L-)BFGS iterations, Newton steps, ODE steps; for
    the mixed-precision solvers, the float64 polish's Newton steps); rtol = 0 runs the
    whole budget, the reference's fixed-iteration protocol. `step_size` is used by the
    first-order methods only: the other solvers choose their steps themselves.
    `progress` prints a line every 10 s during long solves."""
    return pc.make_solver(name, model, rtol=rtol, step_size=step_size, max_steps=max_steps, x=x, y=y,
                          progress=progress)


def dtype(float64: bool):
    import jax.numpy as jnp

    return jnp.float64 if float64 else jnp.float32


def _root(data_root: str):
    return data_root or None


def _describe(dataset) -> dict:
    return {"dataset": dataset.name, "source": dataset.source, "substitute_for": dataset.substitute_for}


_WARNED: set[str] = set()


def _load(name: str, fallback: bool, **kwargs):
    """`load`, or `load_or_default` when `fallback`; the fallback warning is kept and its
    message returned so that it can be recorded in the results."""
    if not fallback:
        try:
            return pcdata.load(name, **kwargs), None
        except pcdata.DatasetMissing as error:
            raise pcdata.DatasetMissing(
                f"{error} The paper preset does not substitute data; place the files there, pass "
                "--set data_root=DIR, or use --preset quick (which falls back to offline data)."
            ) from None
    # The note comes back as a value, not a caught warning: cells run in several
    # threads at once (one per device), and catching warnings is process-wide.
    loaded, note = load_with_fallback_note(name, **kwargs)
    if note is not None and note not in _WARNED:  # once per process, not once per cell
        _WARNED.add(note)
        warnings.warn(note, stacklevel=3)
    return loaded, note


def image_batch(name: str, *, batch: int, seed: int, flatten: bool, data_root: str, fallback: bool,
                multiple_of: int = 1):
    """One fixed batch of `batch` images (the first `batch` of a seeded permutation),
    preprocessed as in docs/background.md §6.2, with the description of what was used. Images
    whose sides are not multiples of `multiple_of` (MNIST's 28×28 for the CNN's three
    poolings) are zero-padded symmetrically up to the next multiple."""
    if name not in IMAGE_DATASETS:
        raise ValueError(f"unknown image dataset {name!r}; choose one of {', '.join(IMAGE_DATASETS)}.")
    dataset, note = _load(name, fallback, root=_root(data_root), n=batch, seed=seed, flatten=False)
    dataset = cast(pcdata.ImageDataset, dataset)  # an image dataset (or its fallback) loads images
    x = dataset.x
    padding = [(-side) % multiple_of for side in x.shape[2:]]
    if any(padding):
        x = np.pad(x, [(0, 0), (0, 0)] + [(p // 2, p - p // 2) for p in padding])
    info = {**_describe(dataset), "fallback_note": note, "batch": len(x), "image_shape": list(x.shape[1:]),
            "padding": padding}
    if flatten:
        x = x.reshape(len(x), -1)
    return x, dataset.y, info


def _corpus(name: str, *, data_root: str, fallback: bool):
    """Corpus `name` (or a path to any plain-text file) and its description."""
    if name in TEXT_DATASETS:
        corpus, note = _load(name, fallback, root=_root(data_root))
        corpus = cast(pcdata.TextCorpus, corpus)  # a corpus (or its fallback) loads text
    else:
        from pathlib import Path

        if not Path(name).is_file():
            raise ValueError(f"`dataset` must be one of {', '.join(TEXT_DATASETS)} or a path to a plain-text "
                             f"file, got {name!r} (no such file).")
        corpus, note = pcdata.read_text(name), None
    used = "shakespeare-excerpt" if note is not None else name  # the fallback is the bundled text
    info = {"dataset": used, "substitute_for": name if note is not None else None, "source": str(corpus.path),
            "fallback_note": note}
    return corpus, info


def text_batch(name: str, *, batch: int, seq_len: int, seed: int, data_root: str, fallback: bool):
    """The paper's character-level batch (docs/background.md §6.2) from corpus `name` (or a
    path to any plain-text file), with its vocabulary size and a description."""
    corpus, info = _corpus(name, data_root=data_root, fallback=fallback)
    x, y = pcdata.text_batch(corpus, batch, seq_len, seed=seed)
    return x, y, {**info, "vocabulary": len(corpus.vocabulary), "characters": len(corpus.tokens)}


def resolve_data(config) -> dict | None:
    """What `config`'s data resolve to on this machine now, read once before a run's
    cells and part of every cell's identity: the dataset used (the one asked for, or the
    offline default where its files are missing and `fallback` allows it), where it was
    read from, its size (training samples, or characters of text) and a fingerprint of the
    preprocessed training split (every cell's batch is drawn from it), which changes
    when the files do. From the config's `dataset`, `data_root` and `fallback` fields;
    None for a config without `dataset` (the toy task draws its data from the seed)."""
    from ._identity import fingerprint

    name = getattr(config, "dataset", None)
    if name is None:
        return None
    data_root, fallback = getattr(config, "data_root", ""), getattr(config, "fallback", True)
    if name in IMAGE_DATASETS:
        dataset, _ = _load(name, fallback, root=_root(data_root), one_hot=False)
        dataset = cast(pcdata.ImageDataset, dataset)  # an image dataset (or its fallback) loads images
        return {**_describe(dataset), "samples": len(dataset.labels),
                "fingerprint": fingerprint(dataset.x, dataset.labels)}
    corpus, info = _corpus(name, data_root=data_root, fallback=fallback)
    return {"dataset": info["dataset"], "substitute_for": info["substitute_for"], "source": info["source"],
            "characters": len(corpus.tokens), "fingerprint": fingerprint(corpus.tokens)}
