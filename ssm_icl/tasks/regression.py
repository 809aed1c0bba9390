"""Regression task families: linear, sparse linear and 2-layer ReLU networks.

Data-generating processes of the reference `tasks.py` (docs/PAPER.md §3.1
to §3.3): x ~ N(0, I_d) with coordinates >= n_dims_truncated zeroed, one
function per prompt, noiseless labels, interleaved prompts. Linear regression
also carries the Garg et al. robustness evaluations as fields (noisy labels,
scaled inputs and outputs, skewed covariance, special queries); see
`linear_regression_robustness_suite`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from ssm_icl.tasks import robustness
from ssm_icl.tasks import task as task_lib


def gaussian_inputs(key: jax.Array, batch_size: int, n_points: int,
                    n_dims: int, n_dims_truncated: Any) -> jax.Array:
  """[b, n, d] float32 x ~ N(0, I_d) with truncated coordinates zeroed."""
  x = jax.random.normal(key, (batch_size, n_points, n_dims), jnp.float32)
  return x * task_lib.dims_mask(n_dims, n_dims_truncated)


@dataclasses.dataclass(frozen=True)
class LinearRegression(task_lib.Task):
  """Noiseless linear regression y = x . w, w ~ N(0, I_d) per prompt.

  The default fields give the paper's task (docs/PAPER.md §3.1); the others are
  Garg et al. robustness evaluations (reference `build_evals`), used at eval
  time:

  * `noise_std`: labels y + noise_std * N(0, 1) (targets are noisy too, as in
    the reference `NoisyLinearRegression`). With `renormalize_ys` the noisy
    labels are multiplied by sqrt(d) / sqrt(E[y_noisy^2]) computed from the
    distribution (d * x_scale^2 * y_scale^2 + noise_std^2), not from the batch
    as the reference does, so every prompt stays independent of its batch.
  * `x_scale`, `y_scale`: inputs (hence labels) scaled by x_scale; labels
    scaled by y_scale.
  * `covariance`: "isotropic", "skewed" or "half_subspace" input covariance
    (see `robustness.scale_matrix`, rotation fixed by `covariance_seed`).
  * `query_mode`: "standard" (every x token is a query, all examples i.i.d.),
    or one special query per prompt: "random_quadrants" (context in one random
    orthant, query not), "orthogonal" (query orthogonal to the span of the
    context inputs; needs n_points <= d, and the slot is masked out when the
    context spans all visible dims) or "overlapping" (query copies a context
    input; needs n_points >= 2). Special-query prompts hold n_points - 1
    context examples and read a single prediction at the last x token
    (`predict_positions = [2 (n_points - 1)]`, `example_index = [n_points -
    1]`); see `robustness`.

  Attributes:
    n_dims: input dimension d.
    noise_std: label noise standard deviation (>= 0).
    renormalize_ys: rescale noisy labels to the noiseless label scale.
    x_scale: input scale (> 0).
    y_scale: label scale (> 0).
    covariance: input covariance kind.
    covariance_seed: seed of the covariance's fixed random rotation.
    query_mode: prompting strategy.
  """

  name: ClassVar[str] = "linear_regression"
  n_dims: int = 20
  noise_std: float = 0.0
  renormalize_ys: bool = False
  x_scale: float = 1.0
  y_scale: float = 1.0
  covariance: str = "isotropic"
  covariance_seed: int = 0
  query_mode: str = "standard"

  def __post_init__(self):
    task_lib.check_positive_int("n_dims", self.n_dims)
    task_lib.check_non_negative("noise_std", self.noise_std)
    for field in ("x_scale", "y_scale"):
      value = getattr(self, field)
      task_lib.check_non_negative(field, value)
      if value == 0:
        raise ValueError(f"{field}={value!r} must be > 0.")
    task_lib.check_choice("covariance", self.covariance,
                          robustness.COVARIANCES)
    task_lib.check_choice("query_mode", self.query_mode,
                          robustness.QUERY_MODES)

  @property
  def d_in(self) -> int:
    return self.n_dims

  @property
  def d_out(self) -> int:
    return 1

  @property
  def default_n_points(self) -> int:
    return 41

  @property
  def normalizer(self) -> float:
    return float(self.n_dims)

  def _inputs(self, key, batch_size, n_points, n_dims_truncated):
    """[b, n, d] inputs with covariance, scale and truncation applied."""
    x = jax.random.normal(key, (batch_size, n_points, self.n_dims))
    t = robustness.scale_matrix(self.n_dims, self.covariance,
                                self.covariance_seed)
    if t is not None:
      x = x @ jnp.asarray(t)
    # Truncation comes last, as in the reference GaussianSampler.
    return x * self.x_scale * task_lib.dims_mask(self.n_dims, n_dims_truncated)

  def _labels(self, key, x, w):
    """[b, n] labels of inputs [b, n, d] under weights [b, d]."""
    y = jnp.einsum("bnd,bd->bn", x, w) * self.y_scale
    if self.noise_std > 0:
      y = y + self.noise_std * jax.random.normal(key, y.shape)
      if self.renormalize_ys:
        clean_var = self.n_dims * (self.x_scale * self.y_scale)**2
        y = y * math.sqrt(self.n_dims / (clean_var + self.noise_std**2))
    return y

  def _sample(self, key, batch_size, n_points, n_dims_truncated):
    k_w, k_x, k_noise, k_query = jax.random.split(key, 4)
    w = jax.random.normal(k_w, (batch_size, self.n_dims))
    x = self._inputs(k_x, batch_size, n_points, n_dims_truncated)
    if self.query_mode == "standard":
      y = self._labels(k_noise, x, w)
      return task_lib.interleaved_prompt(
          x, task_lib.pad_scalar(y, self.n_dims), y, xs=x, ys=y[..., None],
          normalizer=self.normalizer)
    return self._single_query_prompt(k_query, k_noise, x, w, n_dims_truncated)

  def _single_query_prompt(self, key, noise_key, x, w, n_dims_truncated):
    """Prompt of n - 1 context examples and one special query (the last x)."""
    b, n, d = x.shape
    context, query = x[:, :-1], x[:, -1]
    valid = jnp.ones((b,), jnp.float32)
    if self.query_mode == "random_quadrants":
      context = robustness.random_quadrants(key, context)
    elif self.query_mode == "overlapping":
      if n < 2:
        raise ValueError(f"query_mode='overlapping' needs n_points >= 2 (a "
                         f"context input to copy); got n_points={n}.")
      query = robustness.overlapping_query(key, context)
    elif self.query_mode == "orthogonal":
      if n > d:
        raise ValueError(
            f"query_mode='orthogonal' needs n_points <= n_dims={d} (n_points"
            f" - 1 context inputs must leave an orthogonal direction); got "
            f"n_points={n}.")
      if n > 1:
        query = robustness.orthogonal_query(context, query)
        visible = d if n_dims_truncated is None else n_dims_truncated
        # The context spans every visible coordinate: no orthogonal query.
        ok = jnp.asarray(n - 1 < visible)
        valid = valid * ok.astype(jnp.float32)
        query = jnp.where(ok, query, 0.0)
    x = jnp.concatenate([context, query[:, None]], axis=1)
    y = self._labels(noise_key, x, w)
    prompt = task_lib.interleaved_prompt(
        x, task_lib.pad_scalar(y, d), y, xs=x, ys=y[..., None],
        normalizer=self.normalizer)
    # Only the last x token is a query.
    return prompt.replace(
        predict_positions=jnp.array([2 * (n - 1)], jnp.int32),
        targets=prompt.targets[:, -1:],
        loss_mask=valid[:, None, None],
        metric_mask=valid[:, None],
        example_index=jnp.array([n - 1], jnp.int32))


@dataclasses.dataclass(frozen=True)
class SparseLinearRegression(task_lib.Task):
  """Linear regression with a k-sparse w (docs/PAPER.md §3.2).

  w ~ N(0, I_d) with all but k coordinates zeroed; the k kept coordinates are
  uniform among the first n_dims_truncated (the reference's `valid_coords`),
  so the support follows the curriculum. If n_dims_truncated < k, only the
  n_dims_truncated valid coordinates are kept. Metric normalised by k.

  Attributes:
    n_dims: input dimension d.
    k: number of nonzero weights (<= n_dims).
  """

  name: ClassVar[str] = "sparse_linear_regression"
  n_dims: int = 20
  k: int = 3

  def __post_init__(self):
    task_lib.check_positive_int("n_dims", self.n_dims)
    task_lib.check_positive_int("k", self.k)
    task_lib.check_at_most("k", self.k, "n_dims", self.n_dims)

  @property
  def d_in(self) -> int:
    return self.n_dims

  @property
  def d_out(self) -> int:
    return 1

  @property
  def default_n_points(self) -> int:
    return 41

  @property
  def normalizer(self) -> float:
    return float(self.k)

  def _sample(self, key, batch_size, n_points, n_dims_truncated):
    k_w, k_support, k_x = jax.random.split(key, 3)
    support = task_lib.random_subset_mask(
        k_support, (batch_size,), self.n_dims, self.k, n_dims_truncated)
    w = jax.random.normal(k_w, (batch_size, self.n_dims)) * support
    x = gaussian_inputs(k_x, batch_size, n_points, self.n_dims,
                        n_dims_truncated)
    y = jnp.einsum("bnd,bd->bn", x, w)
    return task_lib.interleaved_prompt(
        x, task_lib.pad_scalar(y, self.n_dims), y, xs=x, ys=y[..., None],
        normalizer=self.normalizer)


@dataclasses.dataclass(frozen=True)
class Relu2nnRegression(task_lib.Task):
  """Random 2-layer ReLU network per prompt (docs/PAPER.md §3.3).

  y = ReLU(x W1) W2 * sqrt(2 / hidden), W1 in R^{d x hidden} and W2 in
  R^{hidden} with N(0, 1) entries; the sqrt(2 / hidden) factor gives
  E[y^2] = E|x|^2 = d, so the zero predictor scores about 1 after the /d
  normalisation.

  Attributes:
    n_dims: input dimension d.
    hidden: hidden width.
  """

  name: ClassVar[str] = "relu_2nn_regression"
  n_dims: int = 20
  hidden: int = 100

  def __post_init__(self):
    task_lib.check_positive_int("n_dims", self.n_dims)
    task_lib.check_positive_int("hidden", self.hidden)

  @property
  def d_in(self) -> int:
    return self.n_dims

  @property
  def d_out(self) -> int:
    return 1

  @property
  def default_n_points(self) -> int:
    return 101

  @property
  def normalizer(self) -> float:
    return float(self.n_dims)

  def _sample(self, key, batch_size, n_points, n_dims_truncated):
    k_w1, k_w2, k_x = jax.random.split(key, 3)
    w1 = jax.random.normal(k_w1, (batch_size, self.n_dims, self.hidden))
    w2 = jax.random.normal(k_w2, (batch_size, self.hidden))
    x = gaussian_inputs(k_x, batch_size, n_points, self.n_dims,
                        n_dims_truncated)
    h = jax.nn.relu(jnp.einsum("bnd,bdh->bnh", x, w1))
    y = jnp.einsum("bnh,bh->bn", h, w2) * math.sqrt(2.0 / self.hidden)
    return task_lib.interleaved_prompt(
        x, task_lib.pad_scalar(y, self.n_dims), y, xs=x, ys=y[..., None],
        normalizer=self.normalizer)


def linear_regression_robustness_suite(
    n_dims: int = 20, seed: int = 0) -> dict[str, LinearRegression]:
  """The Garg et al. linear-regression robustness evaluations.

  Mirrors the reference `build_evals` for linear regression: standard,
  noisy labels (noise 1, renormalised), inputs and labels scaled by
  {0.333, 0.5, 2, 3}, skewed and half-subspace covariance, and the random
  quadrants / orthogonal / overlapping train-test prompting strategies.

  Args:
    n_dims: input dimension d.
    seed: seed of the covariance rotations.

  Returns:
    Evaluation name -> task.
  """
  suite = {
      "standard": LinearRegression(n_dims=n_dims),
      "noisy_labels": LinearRegression(
          n_dims=n_dims, noise_std=1.0, renormalize_ys=True),
  }
  for scale in (0.333, 0.5, 2.0, 3.0):
    suite[f"scale_x={scale:g}"] = LinearRegression(n_dims=n_dims,
                                                   x_scale=scale)
    suite[f"scale_y={scale:g}"] = LinearRegression(n_dims=n_dims,
                                                   y_scale=scale)
  for covariance in ("skewed", "half_subspace"):
    suite[covariance] = LinearRegression(
        n_dims=n_dims, covariance=covariance, covariance_seed=seed)
  for mode in ("random_quadrants", "orthogonal", "overlapping"):
    key = mode if mode == "random_quadrants" else f"{mode}_train_test"
    suite[key] = LinearRegression(n_dims=n_dims, query_mode=mode)
  return suite
