"""The `Task` interface shared by the nine task families, and its helpers.

A task is a frozen (hashable) dataclass of knobs whose `sample` method is a
pure function of a PRNG key: `sample(key, batch_size, n_points,
n_dims_truncated) -> Prompt`. It runs inside `jax.jit` with `batch_size` and
`n_points` static and `n_dims_truncated` traced, so a sampler compiles once
per distinct `n_points` and not at every curriculum change of the dims
(coordinates >= n_dims_truncated are zeroed by a mask, as the reference
`GaussianSampler` zeroes them). `sample_padded` zero-pads a prompt to a longer
length bucket, so the training step compiles once per bucket
(`ssm_icl.train.buckets`).

Randomness comes only from `jax.random` under the default
`jax_threefry_partitionable=True`, so the same key gives the same prompt on one
device and on a batch-sharded mesh.

Interleaved layout (every task except CoT-I/O and vector MQAR), as in the
reference `_combine`: token 2i is x_i, token 2i+1 is [y_i, 0, ..., 0], and the
prediction for y_i is read at token 2i (the output after seeing x_i).
"""

from __future__ import annotations

import abc
import functools
import numbers
from typing import Any, Callable, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from ssm_icl import errors
from ssm_icl.tasks import base

class Task(abc.ABC):
  """Base class of every task; subclasses are frozen dataclasses.

  Subclasses set the class attribute `name`, have an `n_dims` field (the d
  that `n_dims_truncated` indexes) and implement `d_in`, `d_out`,
  `normalizer`, `default_n_points` and `_sample`. `sample` validates its
  arguments and then calls `_sample`.
  """

  name: ClassVar[str] = ""

  @property
  @abc.abstractmethod
  def d_in(self) -> int:
    """Token width the model's read-in takes."""

  @property
  @abc.abstractmethod
  def d_out(self) -> int:
    """Width of one prediction."""

  @property
  @abc.abstractmethod
  def normalizer(self) -> float:
    """Metric divisor for the paper's plots (`Prompt.normalizer`)."""

  @property
  @abc.abstractmethod
  def default_n_points(self) -> int:
    """`n_points` at the paper's final curriculum point for this task."""

  @property
  def n_dims_full(self) -> int:
    """The input dimension that `n_dims_truncated` indexes (d)."""
    return self.n_dims  # pytype: disable=attribute-error

  def seq_len(self, n_points: int) -> int:
    """Tokens per prompt of `n_points` examples (interleaved: 2 per point)."""
    check_positive_int("n_points", n_points)
    return 2 * n_points

  def check_fits(self, n_points: int, n_positions: int) -> None:
    """Raises ValueError if the prompt is longer than the model accepts.

    Args:
      n_points: examples per prompt (pairs for vector MQAR).
      n_positions: the model's maximum sequence length, in tokens.
    """
    check_positive_int("n_positions", n_positions)
    length = self.seq_len(n_points)
    if length > n_positions:
      raise errors.UserError(
          f"{self.name}: n_points={n_points} needs {length} tokens, but the "
          f"model allows n_positions={n_positions}; raise n_positions to at "
          f"least {length} or lower n_points.")

  def sample(self, key: jax.Array, batch_size: int, n_points: int,
             n_dims_truncated: Any = None) -> base.Prompt:
    """Draws `batch_size` prompts of `n_points` examples each.

    Args:
      key: PRNG key (new-style typed key or raw uint32[2]).
      batch_size: static number of prompts.
      n_points: static number of in-context examples per prompt.
      n_dims_truncated: None (all d coordinates) or an int, possibly traced,
        in [1, d]; coordinates >= it are zeroed.

    Returns:
      A `Prompt` with every field filled.
    """
    check_positive_int("batch_size", batch_size)
    check_positive_int("n_points", n_points)
    check_truncation(n_dims_truncated, self.n_dims_full)
    return self._sample(key, batch_size, n_points, n_dims_truncated)

  def num_slots(self, n_points: int) -> int:
    """Prediction slots p of a prompt of `n_points` examples."""
    prompt = jax.eval_shape(
        functools.partial(self.sample, batch_size=1, n_points=n_points),
        jax.random.key(0))
    return prompt.metric_mask.shape[1]

  def sample_padded(self, key: jax.Array, batch_size: int, n_points: int,
                    pad_points: int, n_dims_truncated: Any = None
                    ) -> base.Prompt:
    """`sample` of n_points examples, zero-padded to the shapes of pad_points.

    The values are exactly those of `sample(key, batch_size, n_points,
    n_dims_truncated)` (same key, same draws); `base.pad_prompt` appends the
    padding after them with zero masks, so a program compiled for pad_points
    trains and evaluates every n_points <= pad_points (a length bucket).

    Args:
      key: PRNG key.
      batch_size: static number of prompts.
      n_points: static number of real in-context examples.
      pad_points: static bucket size (>= n_points).
      n_dims_truncated: as in `sample`.

    Returns:
      A `Prompt` with the shapes of a prompt of pad_points examples.
    """
    check_positive_int("pad_points", pad_points)
    if pad_points < n_points:
      raise ValueError(f"pad_points={pad_points} must be >= n_points="
                       f"{n_points} (padding cannot shorten a prompt).")
    prompt = self.sample(key, batch_size, n_points, n_dims_truncated)
    if pad_points == n_points:
      return prompt
    like = jax.eval_shape(
        functools.partial(self.sample, batch_size=batch_size,
                          n_points=pad_points), key)
    return base.pad_prompt(prompt, like)

  @abc.abstractmethod
  def _sample(self, key: jax.Array, batch_size: int, n_points: int,
              n_dims_truncated: Any) -> base.Prompt:
    """Task-specific sampling; arguments are already validated."""


# ----------------------------------------------------------------------------
# Validation helpers: ValueError messages name the field and the expectation.
# ----------------------------------------------------------------------------


def check_positive_int(field: str, value: Any) -> None:
  """Raises ValueError unless `value` is an int >= 1 (bool is rejected)."""
  if (isinstance(value, bool) or not isinstance(value, numbers.Integral)
      or value < 1):
    raise errors.UserError(f"{field}={value!r} must be a positive int.")


def check_probability(field: str, value: Any) -> None:
  """Raises ValueError unless 0 <= value <= 1."""
  if (isinstance(value, bool) or not isinstance(value, numbers.Real)
      or not 0.0 <= float(value) <= 1.0):
    raise errors.UserError(
        f"{field}={value!r} must be a probability in [0, 1].")


def check_non_negative(field: str, value: Any) -> None:
  """Raises ValueError unless `value` is a real number >= 0."""
  if (isinstance(value, bool) or not isinstance(value, numbers.Real)
      or not float(value) >= 0.0):
    raise errors.UserError(f"{field}={value!r} must be a number >= 0.")


def check_choice(field: str, value: Any, choices: tuple[str, ...]) -> None:
  """Raises ValueError unless `value` is one of `choices`."""
  if value not in choices:
    raise errors.UserError(f"{field}={value!r} is unknown; expected one of "
                           f"{list(choices)}.")


def check_at_most(field: str, value: int, other: str, bound: int) -> None:
  """Raises ValueError if value > bound (e.g. sparsity k > n_dims)."""
  if value > bound:
    raise errors.UserError(f"{field}={value} must be <= {other}={bound}.")


def check_truncation(n_dims_truncated: Any, n_dims: int) -> None:
  """Validates a concrete `n_dims_truncated`; traced values pass through."""
  if n_dims_truncated is None or isinstance(n_dims_truncated, jax.core.Tracer):
    return
  value = np.asarray(n_dims_truncated)
  if value.shape or not np.issubdtype(value.dtype, np.integer):
    raise errors.UserError(
        f"n_dims_truncated={n_dims_truncated!r} must be None or a scalar int.")
  if not 1 <= int(value) <= n_dims:
    raise errors.UserError(
        f"n_dims_truncated={int(value)} must be in [1, n_dims={n_dims}].")


# Prompt fields with a leading batch axis (the others are per-slot metadata).
BATCHED_FIELDS = ("tokens", "targets", "loss_mask", "metric_mask", "xs", "ys",
                  "example_mask")


def prompt_shardings(prompt: base.Prompt, mesh: jax.sharding.Mesh,
                     batch_axis: str = "data") -> base.Prompt:
  """Shardings that split a prompt's batch over `batch_axis` of `mesh`.

  Use as `out_shardings` of a jitted `sample` (pass the abstract prompt from
  `jax.eval_shape`): batched fields are split on their leading axis, the
  per-slot metadata (`predict_positions`, `example_index`) is replicated.

  Args:
    prompt: a prompt or its `jax.eval_shape` structure.
    mesh: device mesh with an axis named `batch_axis`.
    batch_axis: the data-parallel mesh axis.

  Returns:
    A `Prompt` of `NamedSharding`s (None where the prompt has None).
  """
  spec = jax.sharding.PartitionSpec
  batched = jax.sharding.NamedSharding(mesh, spec(batch_axis))
  replicated = jax.sharding.NamedSharding(mesh, spec())
  changes = {f: None if getattr(prompt, f) is None else batched
             for f in BATCHED_FIELDS}
  return prompt.replace(predict_positions=replicated,
                        example_index=replicated, **changes)


@functools.lru_cache(maxsize=128)
def jitted_sampler(task: Task, batch_size: int, n_points: int,
                   mesh: jax.sharding.Mesh | None = None,
                   batch_axis: str = "data") -> Callable[..., base.Prompt]:
  """`jax.jit` of `task.sample` for fixed sizes, cached per arguments.

  The returned `fn(key, n_dims_truncated=None)` compiles once per structure
  of `n_dims_truncated` (None, or any int32 scalar: a traced value, so
  curriculum changes of the dims do not recompile). With a `mesh`, the batch
  is generated directly in its `prompt_shardings` (split over `batch_axis`);
  under the default `jax_threefry_partitionable` the values are the same as
  unsharded.

  Args:
    task: the task (hashable).
    batch_size: static batch size (divisible by the mesh's batch axis size).
    n_points: static examples per prompt.
    mesh: optional device mesh.
    batch_axis: the data-parallel mesh axis.

  Returns:
    The jitted sampler.
  """
  fn = functools.partial(task.sample, batch_size=batch_size,
                         n_points=n_points)
  if mesh is None:
    return jax.jit(fn)
  abstract = jax.eval_shape(fn, jax.random.key(0))
  return jax.jit(fn, out_shardings=prompt_shardings(abstract, mesh,
                                                    batch_axis))


# ----------------------------------------------------------------------------
# Array helpers used by several families.
# ----------------------------------------------------------------------------


def dims_mask(n_dims: int, n_dims_truncated: Any) -> jax.Array:
  """[d] float32, 1 for coordinates < n_dims_truncated (all 1 when None)."""
  if n_dims_truncated is None:
    return jnp.ones((n_dims,), jnp.float32)
  return (jnp.arange(n_dims) < n_dims_truncated).astype(jnp.float32)


def random_subset_mask(key: jax.Array, shape: tuple[int, ...], n_dims: int,
                       k: int, n_dims_truncated: Any) -> jax.Array:
  """Uniform random k-subsets of the first n_dims_truncated coordinates.

  Draws i.i.d. uniform scores, pushes the scores of the truncated coordinates
  above every valid score and keeps the k smallest, so the subset is uniform
  over the valid coordinates with a static k (a traced truncation needs no
  recompilation). When n_dims_truncated < k only the valid coordinates are
  kept, so the subset then has fewer than k elements.

  Args:
    key: PRNG key.
    shape: leading shape (e.g. (batch,)) of independent subsets.
    n_dims: d.
    k: subset size.
    n_dims_truncated: None or an int (possibly traced).

  Returns:
    [*shape, d] float32 0/1 mask with exactly min(k, n_dims_truncated) ones.
  """
  valid = dims_mask(n_dims, n_dims_truncated)
  scores = jax.random.uniform(key, (*shape, n_dims)) + 2.0 * (1.0 - valid)
  _, idx = jax.lax.top_k(-scores, k)  # [*shape, k]
  mask = jax.nn.one_hot(idx, n_dims, dtype=jnp.float32).sum(-2)
  return mask * valid


def pad_scalar(y: jax.Array, width: int) -> jax.Array:
  """[b, n] -> [b, n, width] with y in channel 0 and zeros elsewhere."""
  return jnp.concatenate(
      [y[..., None], jnp.zeros((*y.shape, width - 1), y.dtype)], axis=-1)


def interleave(x_tokens: jax.Array, y_tokens: jax.Array) -> jax.Array:
  """Interleaves [b, n, d] x and y tokens into [b, 2n, d] (x first)."""
  b, n, d = x_tokens.shape
  return jnp.stack([x_tokens, y_tokens], axis=2).reshape(b, 2 * n, d)


def interleaved_prompt(x_tokens: jax.Array, y_tokens: jax.Array,
                       targets: jax.Array, *, xs: jax.Array, ys: jax.Array,
                       example_mask: jax.Array | None = None,
                       loss: str = base.LOSS_MSE,
                       metric: str = base.METRIC_SQUARED_ERROR,
                       normalizer: float = 1.0) -> base.Prompt:
  """Builds the interleaved prompt of a scalar-label task.

  Args:
    x_tokens: [b, n, d] tokens at the x positions (outlier dummies included).
    y_tokens: [b, n, d] tokens at the y positions.
    targets: [b, n] label each x token must predict.
    xs: [b, n, d] raw inputs for baselines.
    ys: [b, n, 1] raw labels for baselines.
    example_mask: [b, n] 1 at genuine examples; None means all genuine. It is
      also the loss and metric mask (outlier positions are not scored).
    loss: loss name.
    metric: metric name.
    normalizer: metric divisor for the paper's plots.

  Returns:
    The `Prompt`; predictions are read at the x tokens.
  """
  b, n, _ = x_tokens.shape
  if example_mask is None:
    example_mask = jnp.ones((b, n), jnp.float32)
  return base.Prompt(
      tokens=interleave(x_tokens, y_tokens).astype(jnp.float32),
      predict_positions=2 * jnp.arange(n, dtype=jnp.int32),
      targets=targets[..., None].astype(jnp.float32),
      loss_mask=example_mask[..., None].astype(jnp.float32),
      metric_mask=example_mask.astype(jnp.float32),
      example_index=jnp.arange(n, dtype=jnp.int32),
      loss=loss,
      metric=metric,
      normalizer=float(normalizer),
      metric_coords=None,
      xs=xs.astype(jnp.float32),
      ys=ys.astype(jnp.float32),
      example_mask=example_mask.astype(jnp.float32),
  )
