"""Linear baselines solved for every prefix at once in JAX.

* `LeastSquares`: the minimum-norm least-squares fit of the prefix, w =
  pinv(X) y (Garg et al.'s "least squares"). For noiseless linear regression
  with w ~ N(0, I_d) this is the Bayes-optimal predictor: its normalised error
  after k examples is (d - k) / d for k < d and 0 from k = d on.
* `Ridge`: w = (X^T X + alpha I)^-1 X^T y.
* `BayesLinearRegression`: the posterior mean of w under the task's prior
  w ~ N(0, prior_var I) and label noise N(0, noise_var); ridge with
  alpha = noise_var / prior_var, and `LeastSquares` in the noiseless limit.
* `Averaging`: w = mean_i y_i x_i over the prefix (Garg et al.'s "averaging"),
  an unbiased but high-variance estimate of w for isotropic x.

Shapes: b prompts, n examples, d input width, d_y label width, p slots.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from ssm_icl.baselines import prefix
from ssm_icl.tasks import base


@jax.jit
def _least_squares(view: prefix.PrefixView) -> jax.Array:
  """Min-norm least squares of every prefix, [b, p, d_y]."""

  def one_slot(query, mask):            # [b, d], [b, n]
    # Rows outside the prefix are zeroed: a zero row with a zero label adds
    # nothing to the residual, so pinv of the masked matrix equals pinv of the
    # prefix (padded with zero columns) and gives the same min-norm solution.
    x = view.xs * mask[..., None]       # [b, n, d]
    y = view.ys * mask[..., None]       # [b, n, d_y]
    w = jnp.linalg.pinv(x) @ y          # [b, d, d_y]
    return jnp.einsum("bd,bdy->by", query, w)

  return prefix.map_slots(one_slot, view)


@jax.jit
def _ridge(view: prefix.PrefixView, alpha: jax.Array) -> jax.Array:
  """Ridge regression of every prefix, [b, p, d_y]."""
  eye = jnp.eye(view.xs.shape[-1], dtype=jnp.float32)

  def one_slot(query, mask):                            # [b, d], [b, n]
    x = view.xs * mask[..., None]                       # [b, n, d]
    gram = jnp.einsum("bnd,bne->bde", x, x)             # [b, d, d]
    rhs = jnp.einsum("bnd,bny->bdy", x, view.ys)        # [b, d, d_y]
    w = jnp.linalg.solve(gram + alpha * eye, rhs)
    return jnp.einsum("bd,bdy->by", query, w)

  return prefix.map_slots(one_slot, view)


@jax.jit
def _averaging(view: prefix.PrefixView) -> jax.Array:
  """Averaging estimator of every prefix, [b, p, d_y]."""
  m = view.prefix_mask
  # <query_j, x_i> for every slot and example, then the masked mean of
  # y_i <query_j, x_i>, which equals <query_j, mean_i y_i x_i>.
  dots = jnp.einsum("bpd,bnd->bpn", view.queries, view.xs)
  total = jnp.einsum("bpn,bny->bpy", m * dots, view.ys)
  count = m.sum(-1, keepdims=True)
  return total / jnp.maximum(count, 1.0)


@dataclasses.dataclass(frozen=True)
class LeastSquares(prefix.Baseline):
  """Minimum-norm least squares on the prefix; predicts 0 with no examples."""

  def __call__(self, prompt: base.Prompt) -> jax.Array:
    view = prefix.prefix_view(prompt, name="least_squares")
    return prefix.to_targets(_least_squares(view), prompt)


@dataclasses.dataclass(frozen=True)
class Ridge(prefix.Baseline):
  """Ridge regression on the prefix (no intercept).

  Attributes:
    alpha: L2 penalty, > 0.
  """

  alpha: float = 1.0

  def __post_init__(self):
    if not self.alpha > 0:
      raise ValueError(f"Ridge.alpha must be > 0, got {self.alpha}.")

  def __call__(self, prompt: base.Prompt) -> jax.Array:
    view = prefix.prefix_view(prompt, name="ridge")
    return prefix.to_targets(
        _ridge(view, jnp.float32(self.alpha)), prompt)


@dataclasses.dataclass(frozen=True)
class BayesLinearRegression(prefix.Baseline):
  """Posterior mean of w ~ N(0, prior_var I) given y = x.w + N(0, noise_var).

  Attributes:
    noise_var: label noise variance, >= 0 (0: noiseless, min-norm LS).
    prior_var: prior variance of each weight, > 0.
  """

  noise_var: float = 0.0
  prior_var: float = 1.0

  def __post_init__(self):
    if not self.noise_var >= 0:
      raise ValueError(
          f"BayesLinearRegression.noise_var must be >= 0, got "
          f"{self.noise_var}.")
    if not self.prior_var > 0:
      raise ValueError(
          f"BayesLinearRegression.prior_var must be > 0, got "
          f"{self.prior_var}.")

  def __call__(self, prompt: base.Prompt) -> jax.Array:
    if self.noise_var == 0:
      # The posterior mean tends to the min-norm interpolant as the noise
      # vanishes; the ridge formula would need a singular solve there.
      return LeastSquares()(prompt)
    return Ridge(alpha=self.noise_var / self.prior_var)(prompt)


@dataclasses.dataclass(frozen=True)
class Averaging(prefix.Baseline):
  """Predicts <query, mean_i y_i x_i>; 0 with no examples."""

  def __call__(self, prompt: base.Prompt) -> jax.Array:
    view = prefix.prefix_view(prompt, name="averaging")
    return prefix.to_targets(_averaging(view), prompt)
