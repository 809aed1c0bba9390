"""Has a run trained past its plateau? The convergence criterion of Table 1.

A run's training log (metrics.jsonl) holds one train loss per logged step s:
the mean loss of the `log_every` steps that end at s. The criterion:

* smoother: the trailing moving mean of the last `smooth` logged points
  (a point's smoothed value averages it with the `smooth - 1` points before
  it, fewer at the start of the usable log);
* usable log: only points logged after the curriculum's final stage began
  (a point at step s averages steps s - log_every + 1 .. s, so it is usable
  iff s - log_every >= the first step of the final stage). The curriculum
  makes the loss jump up whenever the prompts grow, so earlier points are
  not comparable with the end;
* fall over the last quarter: fall = (L_q - L_end) / |L_q|, where L_q is
  the smoothed loss at the last usable point at or before step
  `start_fraction * steps` (3/4 of training by default) and L_end the
  smoothed loss at the last point;
* the run is "converged" iff fall <= `max_fall` (2%); "not converged" with
  the fall otherwise;
* "curriculum not finished" when the final stage begins after
  `start_fraction * steps`: the last quarter then mixes stages, so no verdict
  is possible (train longer or finish the curriculum earlier);
* "too short" when fewer than `smooth` usable points are logged at or before
  3/4 of training (the smoothed value there would not be a full window).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from ssm_icl import errors

CONVERGED = "converged"
NOT_CONVERGED = "not converged"
CURRICULUM_NOT_FINISHED = "curriculum not finished"
TOO_SHORT = "too short"
STATUSES = (CONVERGED, NOT_CONVERGED, CURRICULUM_NOT_FINISHED, TOO_SHORT)


@dataclasses.dataclass(frozen=True)
class Convergence:
  """The thresholds of the convergence criterion (module docstring).

  Attributes:
    max_fall: the largest relative fall of the smoothed loss over the last
      part of training that still counts as converged; in [0, 1).
    start_fraction: where the last part starts, as a fraction of the steps;
      in (0, 1).
    smooth: logged points per moving mean; >= 1.
  """

  max_fall: float = 0.02
  start_fraction: float = 0.75
  smooth: int = 3

  def __post_init__(self):
    if not 0 <= self.max_fall < 1:
      raise errors.UserError(
          f"Convergence.max_fall={self.max_fall} must be in [0, 1).")
    if not 0 < self.start_fraction < 1:
      raise errors.UserError(f"Convergence.start_fraction="
                             f"{self.start_fraction} must be in (0, 1).")
    if isinstance(self.smooth, bool) or not isinstance(self.smooth, int) or (
        self.smooth < 1):
      raise errors.UserError(
          f"Convergence.smooth={self.smooth!r} must be an int >= 1.")

  def describe(self) -> str:
    """The criterion in words, with its numbers, for the report."""
    return (
        f"Converged: the training loss, smoothed by a trailing moving mean "
        f"of {self.smooth} logged points (each the mean loss of its "
        f"log_every steps), fell by at most {self.max_fall:.0%} between "
        f"{self.start_fraction:g} of the steps and the end (relative to its "
        f"value at {self.start_fraction:g}); only points logged after the "
        f"curriculum's final stage began count. A run whose final stage "
        f"starts after {self.start_fraction:g} of the steps is "
        f"'{CURRICULUM_NOT_FINISHED}'; one with fewer than {self.smooth} "
        f"such points by then is '{TOO_SHORT}'. Neither, nor "
        f"'{NOT_CONVERGED}', receives a mark.")

  def assess(self, steps: Sequence[int], losses: Sequence[float], *,
             total_steps: int, final_stage_step: int = 0,
             log_every: int = 1) -> dict[str, Any]:
    """Applies the criterion to one run's training log.

    Args:
      steps: [n] logged steps, ascending.
      losses: [n] train loss logged at each step.
      total_steps: the run's train.steps.
      final_stage_step: first step of the curriculum's final stage
        (`Curriculum.final_step`; 0 without a curriculum).
      log_every: steps averaged into each logged loss.

    Returns:
      {"status": one of STATUSES, "fall": relative fall or None,
      "loss_start": smoothed loss at the start of the last part or None,
      "loss_end": smoothed final loss or None, "start_step": the step of
      loss_start or None}.

    Raises:
      ValueError: mismatched lengths or a non-positive total_steps.
    """
    steps = np.asarray(steps, np.int64)
    losses = np.asarray(losses, np.float64)
    if steps.shape != losses.shape or steps.ndim != 1:
      raise errors.UserError(
          f"Convergence.assess: steps {steps.shape} and losses "
          f"{losses.shape} must be 1-D of one length.")
    if total_steps < 1:
      raise errors.UserError(f"total_steps={total_steps} must be >= 1.")
    result = {"status": TOO_SHORT, "fall": None, "loss_start": None,
              "loss_end": None, "start_step": None}
    start = self.start_fraction * total_steps
    if final_stage_step > start:
      result["status"] = CURRICULUM_NOT_FINISHED
      return result
    usable = steps - log_every >= final_stage_step
    steps, losses = steps[usable], losses[usable]
    smoothed = moving_mean(losses, self.smooth)
    before = np.flatnonzero(steps <= start)
    if before.size < self.smooth:
      return result
    i = before[-1]
    fall = float((smoothed[i] - smoothed[-1]) / abs(smoothed[i]))
    result.update(
        status=CONVERGED if fall <= self.max_fall else NOT_CONVERGED,
        fall=fall, loss_start=float(smoothed[i]),
        loss_end=float(smoothed[-1]), start_step=int(steps[i]))
    return result


def moving_mean(values: Sequence[float], window: int) -> np.ndarray:
  """Trailing moving mean: out[i] = mean(values[max(0, i-window+1):i+1])."""
  values = np.asarray(values, np.float64)
  sums = np.concatenate([[0.0], np.cumsum(values)])
  idx = np.arange(1, values.size + 1)
  lo = np.maximum(0, idx - window)
  return (sums[idx] - sums[lo]) / (idx - lo)


def train_loss_log(records: Sequence[Mapping[str, Any]]
                   ) -> tuple[list[int], list[float]]:
  """(steps, losses) of the records of metrics.jsonl that hold a train loss.

  A resumed run may log a step twice (the loop truncates the log to its
  checkpoint, but be safe): the last record of a step wins.
  """
  by_step = {}
  for record in records:
    if "train/loss" in record and "step" in record:
      by_step[int(record["step"])] = float(record["train/loss"])
  steps = sorted(by_step)
  return steps, [by_step[s] for s in steps]


def mark_text(convergence: Mapping[str, Any] | None) -> str | None:
  """What a Table 1 cell shows instead of a mark, or None to show the mark."""
  if convergence is None or convergence["status"] == CONVERGED:
    return None
  if convergence["status"] == NOT_CONVERGED:
    return f"not converged (-{convergence['fall']:.1%})"
  return convergence["status"]
