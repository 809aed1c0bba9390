"""Length buckets: a curriculum trains through a few compiled programs.

A curriculum that grows the prompt from 12 to 512 points by 2 would need 251
train programs if every prompt length had its own. Instead the distinct
lengths of the curriculum are grouped into at most `max_buckets` buckets; a
prompt is sampled at its real length and zero-padded to its bucket
(`Task.sample_padded`), and the train and eval steps are compiled once per
bucket. Padding comes after the real tokens and carries zero loss and metric
masks, and every model family is causal, so losses, metrics and gradients
equal the unpadded program's up to floating-point summation order
(tests/train/buckets_test.py checks every family).

The bucket set depends only on the curriculum and `max_buckets`, so a resumed
run compiles the same programs as the uninterrupted one. It is chosen to
minimise the padded points summed over the curriculum's distinct lengths:
each length but the last is used for the same number of steps (the
curriculum's interval), and the last length is always a bucket of its own
(its padding is zero), so this is the padding compute wasted over the whole
curriculum. Buckets are themselves lengths of the curriculum.

Programs are kept in a `ProgramCache` keyed by length. The curriculum never
shortens the prompt, so when a longer bucket is requested every program of
a shorter one is released (its executables are freed with it).
"""

from __future__ import annotations

import bisect
import collections
import numbers
from typing import Any, Callable, Sequence

import numpy as np

from ssm_icl import errors


def choose_buckets(lengths: Sequence[int], max_buckets: int
                   ) -> tuple[int, ...]:
  """At most `max_buckets` of `lengths` that every length pads up to.

  Minimises sum over lengths v of (bucket(v) - v), where bucket(v) is the
  smallest chosen bucket >= v, by dynamic programming over the sorted
  lengths (ties take the first minimum, so the result is deterministic).

  Args:
    lengths: the distinct prompt lengths (points) a run uses, any order.
    max_buckets: the most buckets (programs) allowed; 0 gives every length
      its own bucket (no padding).

  Returns:
    The buckets, ascending; the largest length is always one.

  Raises:
    errors.UserError: a bad `max_buckets` (a ValueError).
    ValueError: an empty `lengths` or a non-positive length.
  """
  if (isinstance(max_buckets, bool)
      or not isinstance(max_buckets, numbers.Integral) or max_buckets < 0):
    raise errors.UserError(
        f"train.length_buckets={max_buckets!r} must be an int >= 0 (0: one "
        "program per prompt length).")
  values = sorted(set(int(v) for v in lengths))
  if not values or values[0] < 1:
    raise ValueError(f"lengths={list(lengths)!r} must be positive ints.")
  m = len(values)
  if max_buckets == 0 or max_buckets >= m:
    return tuple(values)
  v = np.asarray(values, np.float64)
  prefix = np.concatenate([[0.0], np.cumsum(v)])

  def group_cost(i, j):
    """Padding of values[i..j] (arrays of i) into bucket values[j]."""
    return (j - i + 1) * v[j] - (prefix[j + 1] - prefix[i])

  # best[j]: least padding of values[0..j] with k buckets, the last one at
  # values[j]; starts[k - 1][j]: the first index of that last group. With
  # fewer values than buckets every value is a bucket (returned above), so
  # exactly max_buckets buckets are optimal here.
  best = group_cost(np.zeros(m, np.int64), np.arange(m))
  starts = [np.zeros(m, np.int64)]
  for k in range(2, max_buckets + 1):
    new, start = np.full(m, np.inf), np.zeros(m, np.int64)
    for j in range(k - 1, m):
      i = np.arange(k - 1, j + 1)  # the last group is values[i..j]
      costs = best[i - 1] + group_cost(i, j)
      t = int(np.argmin(costs))
      new[j], start[j] = costs[t], i[t]
    best = new
    starts.append(start)
  buckets, j = [], m - 1
  for start in reversed(starts):
    buckets.append(values[j])
    j = int(start[j]) - 1
  return tuple(sorted(buckets))


def curriculum_buckets(curriculum: Any, max_buckets: int) -> tuple[int, ...]:
  """The buckets of a `tasks.Curriculum` (see `choose_buckets`)."""
  return choose_buckets(curriculum.distinct_points(), max_buckets)


def bucket_of(buckets: Sequence[int], n_points: int) -> int:
  """The smallest bucket >= n_points.

  Raises:
    ValueError: if n_points exceeds the largest bucket.
  """
  i = bisect.bisect_left(buckets, n_points)
  if i == len(buckets):
    raise ValueError(f"n_points={n_points} is longer than the largest length "
                     f"bucket {buckets[-1]} (buckets {tuple(buckets)}).")
  return buckets[i]


class ProgramCache:
  """Jitted programs keyed by a prompt length that never decreases.

  `get(length)` builds the program on first use and releases every program
  of a shorter length: the curriculum has moved past it for good. A release
  calls the jitted function's `clear_cache()` and drops the last reference,
  so its compiled executables are freed.

  Attributes:
    built: Counter of lengths built so far.
    released: the lengths released so far, in order.
  """

  def __init__(self, build: Callable[[int], Callable[..., Any]]):
    """`build(length)` returns the (jitted) program of `length`."""
    self._build = build
    self._programs: dict[int, Callable[..., Any]] = {}
    self.built = collections.Counter()
    self.released: list[int] = []

  def get(self, length: int) -> Callable[..., Any]:
    """The program of `length`; shorter ones are released first."""
    for old in sorted(k for k in self._programs if k < length):
      program = self._programs.pop(old)
      if hasattr(program, "clear_cache"):
        program.clear_cache()
      self.released.append(old)
    if length not in self._programs:
      self._programs[length] = self._build(length)
      self.built.update([length])
    return self._programs[length]

  def __contains__(self, length: int) -> bool:
    return length in self._programs

  def __len__(self) -> int:
    return len(self._programs)
