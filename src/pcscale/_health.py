"""When a training run has failed: the one policy shared by [`train`][pcscale.train] and
the experiments' lockstep loop.

A run fails at the first step t (metrics measured at θ_t, before update t) where

- the PC loss 𝓛(θ_t), the PC energy F or the BP twin's loss is not a finite number;
- either loss exceeds `LOSS_GROWTH_LIMIT` (10⁶) times its value at t = 0 — training
  has diverged even if the numbers are still finite (e.g. 1 → 6·10²⁴);
- on a fixed batch, the PC update was refused (inference diverged, or its gradient, new
  weights or new optimiser state were not finite), or the BP twin's update was: every
  later step would repeat it. With changing batches a refused update is skipped and
  counted, not a failure.

The losses at θ_T (after the last update) are checked the same way, as step T. Training
stops at the first failure. This module holds only host-side logic on plain numbers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from ._solution import RESULTS

LOSS_GROWTH_LIMIT = 1e6


@dataclasses.dataclass(frozen=True)
class TrainingFailure:
    """Why and where a training run failed.

    - `step`: the first failing step t (metrics at θ_t, before update t); the number of
      steps T when only the final losses, at θ_T, failed.
    - `reason`: what happened, in words, with the offending numbers.
    """

    step: int
    reason: str

    def __str__(self) -> str:
        return f"failed at step {self.step}: {self.reason}"

    def to_json(self) -> dict:
        return {"step": self.step, "reason": self.reason}

    @classmethod
    def from_json(cls, content) -> TrainingFailure | None:
        if content is None:
            return None
        return cls(int(content["step"]), str(content["reason"]))


def _number(value) -> str:
    value = float(value)
    return f"{value:.4g}" if math.isfinite(value) else str(value)


def _loss_failure(name: str, value: float, initial: float) -> str | None:
    if not math.isfinite(value):
        return f"the {name} is {_number(value)}, not a finite number"
    if math.isfinite(initial) and initial > 0 and value > LOSS_GROWTH_LIMIT * initial:
        return (f"the {name} grew from {_number(initial)} to {_number(value)}, more than "
                f"{LOSS_GROWTH_LIMIT:g}× its initial value (training diverged)")
    return None


def step_failure(step: int, metrics: Mapping[str, Any], *, initial_pc_loss: float, initial_bp_loss: float,
                 fixed_batch: bool = True) -> TrainingFailure | None:
    """The failure at step `step` of a PC run beside its BP twin, or None (the policy in
    the module's docstring).

    `metrics` maps `pc_loss`, `bp_loss`, `pc_energy` (numbers), `pc_updated`,
    `bp_updated` (flags) and `result` (the step's `RESULTS` code) to the step's values;
    `initial_*` are the losses at t = 0. With changing batches (`fixed_batch=False`) a
    refused update is not a failure: the next batch may well give a good one, and the
    caller counts refusals instead."""
    diverged = int(metrics["result"]) == int(RESULTS.diverged._value)
    checks = (
        _loss_failure("PC loss", float(metrics["pc_loss"]), initial_pc_loss),
        None if math.isfinite(float(metrics["pc_energy"])) else
        f"the PC energy is {_number(metrics['pc_energy'])}, not a finite number",
        _loss_failure("BP twin's loss", float(metrics["bp_loss"]), initial_bp_loss),
        None if bool(metrics["pc_updated"]) or not fixed_batch else (
            "the PC update was refused because inference diverged" if diverged else
            "the PC update was refused because its gradient, the new weights or the new optimiser state were "
            "not finite"),
        None if bool(metrics["bp_updated"]) or not fixed_batch else (
            "the BP twin's update was refused because its gradient, the new weights or the new optimiser state "
            "were not finite"),
    )
    for reason in checks:
        if reason is not None:
            return TrainingFailure(int(step), reason)
    return None


def final_failure(steps: int, *, pc_loss: float, bp_loss: float, initial_pc_loss: float,
                  initial_bp_loss: float) -> TrainingFailure | None:
    """The failure of the losses at θ_T (after the last of `steps` updates), or None."""
    for name, value, initial in (("final PC loss", pc_loss, initial_pc_loss),
                                 ("final BP twin's loss", bp_loss, initial_bp_loss)):
        reason = _loss_failure(name, float(value), float(initial))
        if reason is not None:
            return TrainingFailure(int(steps), reason)
    return None


ADVICE = ("lower the learning rate, or use an inference solver that converges on this network "
          "(pcscale.auto_solver)")
