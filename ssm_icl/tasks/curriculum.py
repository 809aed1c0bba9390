"""Curriculum over input dimensions and prompt length (docs/PAPER.md §2.3).

The reference `Curriculum` is stateful: data for step s is sampled with the
current values, then `update()` adds `inc` whenever its step counter reaches a
multiple of `interval`, clipped at `end`. That makes the value at step s (0
based) `min(start + inc * (s // interval), end)`, which `Curriculum.at`
computes directly, so a resumed run needs no replay of updates.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Mapping

from ssm_icl import errors

_PARTS = ("dims", "points")
_KEYS = ("start", "end", "inc", "interval")


@dataclasses.dataclass(frozen=True)
class Curriculum:
  """Schedules of `n_dims_truncated` and `n_points` as functions of the step.

  Defaults are the paper's linear-regression schedule: dims 5 -> 20 (+1 every
  2000 steps) and points 11 -> 41 (+2 every 2000 steps).

  Attributes:
    dims_start: first n_dims_truncated.
    dims_end: last n_dims_truncated (>= dims_start).
    dims_inc: increment (> 0 unless start == end).
    dims_interval: steps between increments (>= 1).
    points_start: first n_points.
    points_end: last n_points (>= points_start).
    points_inc: increment (> 0 unless start == end).
    points_interval: steps between increments (>= 1).
  """

  dims_start: int = 5
  dims_end: int = 20
  dims_inc: int = 1
  dims_interval: int = 2000
  points_start: int = 11
  points_end: int = 41
  points_inc: int = 2
  points_interval: int = 2000

  def __post_init__(self):
    for part in _PARTS:
      values = {k: getattr(self, f"{part}_{k}") for k in _KEYS}
      for k, value in values.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
          raise errors.UserError(f"{part}_{k}={value!r} must be an int.")
      if values["start"] < 1:
        raise errors.UserError(f"{part}_start={values['start']} must be >= 1.")
      if values["end"] < values["start"]:
        raise errors.UserError(f"{part}_end={values['end']} must be >= "
                               f"{part}_start={values['start']}.")
      if values["interval"] < 1:
        raise errors.UserError(
            f"{part}_interval={values['interval']} must be >= 1.")
      if values["inc"] < 0 or (values["inc"] == 0
                               and values["end"] > values["start"]):
        raise errors.UserError(
            f"{part}_inc={values['inc']} must be > 0 to go from "
            f"{part}_start={values['start']} to {part}_end={values['end']} "
            "(>= 0 when they are equal).")

  @classmethod
  def constant(cls, n_dims: int, n_points: int) -> Curriculum:
    """A curriculum that stays at (n_dims, n_points)."""
    return cls(dims_start=n_dims, dims_end=n_dims, dims_inc=0,
               points_start=n_points, points_end=n_points, points_inc=0)

  @classmethod
  def from_config(cls, config: Mapping[str, Any]) -> Curriculum:
    """Builds a curriculum from a dict or ml_collections ConfigDict.

    Accepts the reference's nested layout, `{"dims": {"start", "end", "inc",
    "interval"}, "points": {...}}`, or the flat field names
    (`dims_start`, ...). Missing keys take the defaults.

    Args:
      config: the curriculum section of a config.

    Returns:
      The curriculum.

    Raises:
      ValueError: on an unknown key or an invalid value.
    """
    if hasattr(config, "to_dict"):  # ml_collections.ConfigDict
      config = config.to_dict()
    if not isinstance(config, Mapping):
      raise errors.UserError(f"Curriculum config must be a mapping; got "
                             f"{type(config).__name__}.")
    flat = {}
    for name, value in config.items():
      if name in _PARTS:
        if hasattr(value, "to_dict"):
          value = value.to_dict()
        if not isinstance(value, Mapping):
          raise errors.UserError(
              f"Curriculum config {name!r} must be a mapping "
              f"with keys {list(_KEYS)}; got {value!r}.")
        for k, v in value.items():
          if k not in _KEYS:
            raise errors.UserError(
                f"Unknown curriculum key {name}.{k}; expected "
                f"one of {list(_KEYS)}.")
          flat[f"{name}_{k}"] = v
      else:
        flat[name] = value
    valid = {f.name for f in dataclasses.fields(cls)}
    for name in flat:
      if name not in valid:
        raise errors.UserError(
            f"Unknown curriculum key {name!r}; expected one of "
            f"{sorted(valid)} or nested 'dims'/'points'.")
    return cls(**flat)

  def _value(self, part: str, step: int) -> int:
    start, end, inc, interval = (getattr(self, f"{part}_{k}") for k in _KEYS)
    return int(min(start + inc * (step // interval), end))

  def at(self, step: int) -> tuple[int, int]:
    """(n_dims_truncated, n_points) used to sample the data of `step`.

    Args:
      step: training step, 0 based (a Python or numpy int).

    Returns:
      Python ints (n_dims_truncated, n_points).
    """
    if isinstance(step, bool) or not isinstance(step, numbers.Integral):
      raise ValueError(f"step={step!r} must be an int.")
    if step < 0:
      raise ValueError(f"step={step} must be >= 0.")
    return self._value("dims", step), self._value("points", step)

  @property
  def final(self) -> tuple[int, int]:
    """(dims_end, points_end)."""
    return self.dims_end, self.points_end

  @property
  def final_step(self) -> int:
    """The first step at which both schedules have reached their end."""
    steps = []
    for part in _PARTS:
      start, end, inc, interval = (getattr(self, f"{part}_{k}") for k in _KEYS)
      steps.append(0 if end == start else
                   math.ceil((end - start) / inc) * interval)
    return max(steps)

  def distinct_points(self) -> tuple[int, ...]:
    """Every n_points the schedule uses, ascending (one sampler each)."""
    if self.points_end == self.points_start:
      return (self.points_start,)
    values = range(self.points_start, self.points_end, self.points_inc)
    return tuple(values) + (self.points_end,)
