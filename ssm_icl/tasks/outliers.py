"""Linear regression with outlier examples (docs/PAPER.md §3.5, §3.6).

Each example is independently an outlier with probability `prob` (the
reference `FilteringGaussianSampler`: mask = U(0, 1) < p). Labels are computed
from the clean inputs first; then the x and y tokens of outliers are replaced
by dummies. Outlier positions have loss_mask = metric_mask = 0 (the reference
scores `output[~mask]` only) and example_mask = 0, so baselines skip them;
`ys` keeps the true labels of the clean inputs everywhere. `example_index`
counts every preceding example, outliers included (the reference's x-axis).
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from ssm_icl.tasks import regression
from ssm_icl.tasks import task as task_lib

OUTLIER_LAYOUTS = ("random", "fixed")


def fixed_outlier_pattern(n_points: int, prob: float) -> np.ndarray:
  """[n] bool, evenly spaced outliers with fraction `prob`.

  Example i is an outlier when floor((i + 1) p) > floor(i p): the first i
  examples then hold floor(i p) outliers, as evenly spread as possible, and
  the first example is clean (p < 1). This is the reference's "fixed_dummy"
  evaluation with a clean spacing rule: the reference's arithmetic makes,
  e.g., only the first 9 of 512 examples outliers at p = 0.9.
  """
  i = np.arange(n_points, dtype=np.float64)
  eps = 1e-9  # guards floor() against p * i landing just below an integer
  return np.floor((i + 1) * prob + eps) > np.floor(i * prob + eps)


def _unit(v: jax.Array) -> jax.Array:
  return v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def _remove(v: jax.Array, unit_dir: jax.Array) -> jax.Array:
  """Removes from v [b, d] its component along unit_dir [b, d]."""
  return v - jnp.sum(v * unit_dir, -1, keepdims=True) * unit_dir


def orthogonal_dummy(key: jax.Array, w: jax.Array) -> jax.Array:
  """One dummy vector per prompt, orthogonal to w.

  The reference (`generate_dummy_vector`) draws Gaussian u, v, makes them
  orthogonal to w and to each other, and returns a u + b v with a, b ~ N(0, 1)
  rescaled by an order-dependent quirk (a <- a / (a^2 + b^2), then b <- b /
  (a_new^2 + b^2)). Here (a, b) is normalised to the unit circle and u, v to
  unit length, and the result is scaled to norm sqrt(d), the typical norm of
  a clean input, which is the intent stated in the reference's comment.

  Args:
    key: PRNG key.
    w: [b, d] vectors to be orthogonal to.

  Returns:
    [b, d] dummies with <dummy, w> = 0 and norm sqrt(d).
  """
  b, d = w.shape
  k_u, k_v, k_ab = jax.random.split(key, 3)
  w_hat = _unit(w)
  u = _unit(_remove(jax.random.normal(k_u, (b, d)), w_hat))
  v = _remove(_remove(jax.random.normal(k_v, (b, d)), w_hat), u)
  v = _unit(v)
  ab = _unit(jax.random.normal(k_ab, (b, 2)))
  return math.sqrt(d) * (ab[:, :1] * u + ab[:, 1:] * v)


@dataclasses.dataclass(frozen=True)
class _OutlierRegression(task_lib.Task):
  """Shared fields and sampling of the two outlier tasks.

  Attributes:
    n_dims: input dimension d.
    prob: probability that an example is an outlier (0 gives the reference's
      "wo_dummy" evaluation).
    outlier_layout: "random" (i.i.d. per example, training) or "fixed" (the
      evenly spaced `fixed_outlier_pattern`, the "fixed_dummy" evaluation).
  """

  n_dims: int = 20
  prob: float = 0.5
  outlier_layout: str = "random"

  def __post_init__(self):
    task_lib.check_positive_int("n_dims", self.n_dims)
    task_lib.check_probability("prob", self.prob)
    task_lib.check_choice("outlier_layout", self.outlier_layout,
                          OUTLIER_LAYOUTS)

  @property
  def d_in(self) -> int:
    return self.n_dims

  @property
  def d_out(self) -> int:
    return 1

  @property
  def normalizer(self) -> float:
    return float(self.n_dims)

  def outlier_mask(self, key, batch_size, n_points) -> jax.Array:
    """[b, n] bool, True at outlier examples."""
    if self.outlier_layout == "fixed":
      pattern = jnp.asarray(fixed_outlier_pattern(n_points, self.prob))
      return jnp.broadcast_to(pattern, (batch_size, n_points))
    return jax.random.uniform(key, (batch_size, n_points)) < self.prob

  def _dummies(self, key, w, n_dims_truncated):
    """Returns ([b, d] x-token dummy, [b, d] y-token dummy)."""
    raise NotImplementedError

  def _sample(self, key, batch_size, n_points, n_dims_truncated):
    k_w, k_x, k_mask, k_dummy = jax.random.split(key, 4)
    w = jax.random.normal(k_w, (batch_size, self.n_dims))
    x = regression.gaussian_inputs(k_x, batch_size, n_points, self.n_dims,
                                   n_dims_truncated)
    y = jnp.einsum("bnd,bd->bn", x, w)  # labels of the clean inputs
    outlier = self.outlier_mask(k_mask, batch_size, n_points)[..., None]
    dummy_x, dummy_y = self._dummies(k_dummy, w, n_dims_truncated)
    x_tokens = jnp.where(outlier, dummy_x[:, None], x)
    y_tokens = jnp.where(outlier, dummy_y[:, None],
                         task_lib.pad_scalar(y, self.n_dims))
    clean = 1.0 - outlier[..., 0].astype(jnp.float32)
    return task_lib.interleaved_prompt(
        x_tokens, y_tokens, y, xs=x_tokens, ys=y[..., None],
        example_mask=clean, normalizer=self.normalizer)


@dataclasses.dataclass(frozen=True)
class OrthoOutlierRegression(_OutlierRegression):
  """Linear regression whose outliers are vectors orthogonal to w.

  At an outlier, the x token is replaced by one dummy vector and the padded
  y token by another (`orthogonal_dummy`), each drawn once per prompt and
  shared by all its outliers; both are full d-vectors (the curriculum does
  not truncate them, as in the reference). By default (the paper's intent)
  they are orthogonal to the prompt's own effective weight vector (w with the
  truncated coordinates zeroed), so a dummy carries no label information.

  Reference bug switch: `reference_fresh_w=True` makes them orthogonal to
  fresh random vectors instead, one for the x dummy and another for the y
  dummy, as the released code does (it calls `task_sampler()` to get a w).

  Attributes:
    reference_fresh_w: reproduce the reference's unrelated-w dummies.
  """

  name: ClassVar[str] = "ortho_outlier_regression"
  prob: float = 0.5
  reference_fresh_w: bool = False

  @property
  def default_n_points(self) -> int:
    return 101

  def _dummies(self, key, w, n_dims_truncated):
    k_x, k_y, k_fresh = jax.random.split(key, 3)
    if self.reference_fresh_w:
      w_x, w_y = jax.random.normal(k_fresh, (2, *w.shape))
    else:
      w_x = w_y = w * task_lib.dims_mask(self.n_dims, n_dims_truncated)
    return orthogonal_dummy(k_x, w_x), orthogonal_dummy(k_y, w_y)


@dataclasses.dataclass(frozen=True)
class ManyOutlierRegression(_OutlierRegression):
  """Linear regression where most examples (p = 0.9) are constant outliers.

  At an outlier, x is the all-ones d-vector (every coordinate, including the
  truncated ones, as in the reference) and the y token is [1, 0, ..., 0].
  Only the remaining ~10% of examples are scored.
  """

  name: ClassVar[str] = "many_outlier_regression"
  prob: float = 0.9

  @property
  def default_n_points(self) -> int:
    return 512

  def _dummies(self, key, w, n_dims_truncated):
    del key, n_dims_truncated  # deterministic dummies
    b, d = w.shape
    ones = jnp.ones((b, d), jnp.float32)
    return ones, task_lib.pad_scalar(ones[:, :1], d)[:, 0]
