"""`transformer` — Figure 4c: decoder-only transformers under CompleteP-style μPC on
character-level Shakespeare, PC against BP across widths (docs/background.md §5.9). Energies and
losses are logged per token (F/T_seq next to the per-token BP loss)."""

from __future__ import annotations

import dataclasses

import jax

import pcscale as pc

from . import _names, _nonlinear
from ._config import check_config, check_positive, field
from ._lockstep import optimiser_for, train_lockstep
from ._results import Cell, CellResult
from ._runner import CellContext, Experiment
from ._shared import DataFields, InferenceFields, ParameterisationFields, SizeFields, TrainingFields


@dataclasses.dataclass(frozen=True)
class TransformerConfig(TrainingFields, InferenceFields, ParameterisationFields, SizeFields, DataFields):
    """Settings of `transformer` (`pcscale show-config transformer` lists each with its
    meaning). The batch is B consecutive windows of `seq_len` characters
    (docs/background.md §6.2); the paper's figure is seed 2.

    Quick uses η = 0.03 for T = 20 steps; the paper's η = 1e-3 (the paper preset)
    barely moves the loss in a short run: with base width 1 the LM head's multiplier is
    1/d and σ0 = 0.02, so the logits start at about 1e-4 and Adam's first steps, which
    move each raw weight by at most its rate, lower the per-token loss by only about
    3e-5 per step at η = 1e-3 (a few 1e-4 below ln V after five steps). The loss curves
    are nearly the same at every width, as μP's per-group rates intend.

    Quick infers with "auto" (Newton–Krylov with the depth preconditioner, in float32,
    certified in float64 by `pcscale.MixedPrecision` below the float32 floor) to
    rtol = 1e-6, at most 100 Newton steps, so that every step is certified also once
    training has grown the weights (in the quick run GD with β = 0.45 misses rtol = 1e-4
    within 200 steps from about t = 13, and turns unstable in the last steps), and so
    does the paper preset. The reference protocol, GD with β = 0.45 for at most 800
    steps, is the fidelity option (its residuals are reported)."""

    dataset: str = field("tinyshakespeare", "the text: tinyshakespeare (read from the data root), "
                                            "shakespeare-excerpt (bundled) or a path to any plain-text file")
    widths: tuple[int, ...] = field((8, 32, 64), "d_model: the widths swept, one cell each")
    parameterisation: str = "completep"
    learning_rate: float = field(0.03, "η: Adam's base rate, with the per-group rates of docs/background.md §3.4")
    step_size: float = field(0.45, "β per sequence of gradient-descent inference (nesterov uses β/2)")
    seq_len: int = field(16, "T_seq: the characters of each sequence")
    n_blocks: int = field(2, "n_b: transformer blocks")
    n_heads: int = field(2, "attention heads per block (each width a multiple of it)")
    layer_norm: bool = field(False, "a LayerNorm in each block (the paper has none)")
    reference_init_std: bool = field(True, "the paper's Fig. 4c initialisation (σ0 under μPC, σ0/√d under SP)")
    b1: float = field(0.9, "Adam's β1")
    b2: float = field(0.95, "Adam's β2")
    eps: float = field(1e-12, "Adam's ε (docs/background.md §3.4)")
    weight_decay: float = field(0.0, "Adam's weight decay")

    def __post_init__(self):
        check_config(self)
        check_positive(self, "batch", "seq_len", "widths", "n_blocks", "n_heads", "gamma0", "learning_rate",
                       "steps")
        _nonlinear.check_inference(self)
        bad = [d for d in self.widths if d % self.n_heads]
        if bad:
            raise ValueError(f"`widths` must be multiples of n_heads = {self.n_heads}, got {bad}.")


QUICK = TransformerConfig()
# Certified inference (auto, rtol 1e-6) as in quick; the reference's fixed GD budget is
# `--set solver=gd --set rtol=0 --set max_inference_steps=800`.
PAPER = TransformerConfig(fallback=False, batch=128, seq_len=32, widths=(8, 16, 32, 64, 128, 256, 512), n_blocks=12,
                          n_heads=8, seeds=(0, 1, 2), learning_rate=1e-3, steps=100)


def cells(config: TransformerConfig) -> list[Cell]:
    return [Cell(f"d{d}-seed{seed}", {"width": d, "seed": seed}) for d in config.widths for seed in config.seeds]


def tracked_layers(model) -> tuple[list[int], list[str]]:
    """[R]'s tracked layers, chosen by structure: the embedding (the first layer), the
    first and last residual blocks, and the LM head (the last layer)."""
    blocks = [i for i, layer in enumerate(model.layers) if layer.skip]
    layers = [0, blocks[0], blocks[-1], len(model.layers) - 1]
    labels = ["Embedding", "Block 1", f"Block {len(blocks)}", "LM head"]
    if len(blocks) == 1:  # the first block is the last
        layers, labels = [layers[0], layers[1], layers[3]], [labels[0], labels[1], labels[3]]
    return layers, labels


def run_cell(config: TransformerConfig, cell: Cell, context: CellContext) -> CellResult:
    d, seed = cell.settings["width"], cell.settings["seed"]
    x, y, data_info = _names.text_batch(config.dataset, batch=config.batch, seq_len=config.seq_len, seed=seed,
                                        data_root=config.data_root, fallback=config.fallback)
    dtype = _names.dtype(config.float64)
    _, model_key = jax.random.split(jax.random.PRNGKey(seed))
    parameterisation = _names.parameterisation(config.parameterisation, gamma0=config.gamma0,
                                               alpha=1.0 if config.parameterisation == "sp" else None,
                                               reference_init_std=config.reference_init_std)
    model = pc.nn.transformer(data_info["vocabulary"], d, config.n_heads, config.n_blocks, max_len=config.seq_len,
                              layer_norm=config.layer_norm, parameterisation=parameterisation, dtype=dtype,
                              key=model_key)
    adam = pc.Adam(config.learning_rate, b1=config.b1, b2=config.b2, eps=config.eps,
                   weight_decay=config.weight_decay)
    optimiser = optimiser_for(model, adam)
    y = y.astype(dtype)
    solver = _nonlinear.solver_for(config, model, x, y, progress=context.progress)
    trace = train_lockstep(model, x, y, optimiser=optimiser, inference=solver, steps=config.steps,
                           loss_scale=1.0 / config.seq_len, progress=context.progress, mesh=context.mesh,
                           description=cell.name)
    layers, labels = tracked_layers(model)
    info = {**data_info, "solver": type(solver).__name__, "tracked_layers": layers, "layer_labels": labels,
            "per_token": True, "paper_seed": 2}
    return CellResult(cell, trace, info, 0.0)


def summarise(config: TransformerConfig, results: list[CellResult]) -> str:
    title = (f"transformer: n_b = {config.n_blocks}, n_h = {config.n_heads}, {config.parameterisation}, "
             f"B = {config.batch} × T_seq = {config.seq_len}, Adam η = {config.learning_rate:g} (losses per token)")
    return _nonlinear.summarise(title, config, results, label=lambda r: f"d = {r.cell.settings['width']}",
                                symbol="d", section="§5.9")


EXPERIMENT = Experiment(
    name="transformer",
    description="Figure 4c: decoder-only transformers (CompleteP-style μPC) on Shakespeare, PC against BP",
    config_type=TransformerConfig,
    presets={"quick": QUICK, "paper": PAPER},
    cells=cells,
    run_cell=run_cell,
    summarise=summarise,
    figures=("pcscale.plots._training:plot_training",),
)
