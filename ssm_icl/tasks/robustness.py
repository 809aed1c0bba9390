"""Input transformations for the Garg et al. (2022) robustness evaluations.

These are the eval-time distribution shifts of linear regression that the
reference `eval.py::build_evals` wires in (docs/PAPER.md §3.10): skewed and
half-subspace input covariances, and three prompting strategies that change
how the query relates to the in-context inputs (random quadrants, orthogonal
train/test, overlapping train/test). `regression.LinearRegression` uses them
through its `covariance` and `query_mode` fields.

The reference evaluates a query strategy at slot i by running the model once
per i on (x_1..x_{i-1} from the context, query_i): the in-context inputs stay
i.i.d. while the query is special. A causal prompt cannot hold a different
query at every slot, so here a prompt of n points has n - 1 context examples
and one special query (its last x); evaluating several context sizes means
sampling several `n_points`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

COVARIANCES = ("isotropic", "skewed", "half_subspace")
QUERY_MODES = ("standard", "random_quadrants", "orthogonal", "overlapping")


@functools.lru_cache(maxsize=32)
def scale_matrix(n_dims: int, covariance: str, seed: int) -> np.ndarray | None:
  """The fixed linear map x = g @ T that gives the input covariance T^T T.

  As in Garg et al.'s `sample_transformation(eigenvalues, normalize=True)`:
  T = U diag(lambda) U^T with U a random rotation (fixed by `seed`, one per
  evaluation as in the reference) and T rescaled so that trace(T^T T) = d, the
  isotropic value, keeping E|x|^2 and hence the label scale unchanged.

  Args:
    n_dims: d.
    covariance: "isotropic" (returns None), "skewed" (lambda_i = 1 / (i + 1))
      or "half_subspace" (lambda = 1 on the first d // 2 eigen-directions, 0
      elsewhere).
    seed: seed of the rotation U.

  Returns:
    [d, d] float32 numpy array, or None for the isotropic case.
  """
  if covariance == "isotropic":
    return None
  if covariance == "skewed":
    eig = 1.0 / (np.arange(n_dims) + 1.0)
  elif covariance == "half_subspace":
    eig = np.zeros(n_dims)
    eig[: n_dims // 2] = 1.0
  else:
    raise ValueError(f"covariance={covariance!r} is unknown; expected one of "
                     f"{list(COVARIANCES)}.")
  rng = np.random.default_rng(seed)
  u, _, _ = np.linalg.svd(rng.standard_normal((n_dims, n_dims)))
  t = (u * eig) @ u.T
  t *= np.sqrt(n_dims / np.sum(eig**2))
  return t.astype(np.float32)


def random_quadrants(key: jax.Array, context: jax.Array) -> jax.Array:
  """Moves every context input of a prompt into one random orthant.

  Args:
    key: PRNG key.
    context: [b, m, d] context inputs.

  Returns:
    [b, m, d]: |x| times a per-prompt random sign pattern shared by the
    prompt's context (the query is left as drawn, so it usually lies in
    another orthant).
  """
  b, _, d = context.shape
  signs = jax.random.rademacher(key, (b, 1, d), dtype=context.dtype)
  return jnp.abs(context) * signs


def orthogonal_query(context: jax.Array, query: jax.Array) -> jax.Array:
  """Projects the query onto the orthogonal complement of the context span.

  The projected query is rescaled to the norm the query had, as in the
  reference `gen_orthogonal_train_test`. A pseudo-inverse projection keeps it
  well defined when the context is rank deficient (e.g. more context points
  than visible dimensions; the caller masks that case out).

  Args:
    context: [b, m, d] context inputs, m >= 1.
    query: [b, d] query inputs.

  Returns:
    [b, d] queries orthogonal to every context input.
  """
  proj = jnp.linalg.pinv(context) @ context  # [b, d, d] row-space projector
  resid = query
  # Project twice ("twice is enough"): when the query lies close to the span,
  # one float32 projection leaves a residual whose error, after rescaling to
  # the query's norm, is far from orthogonal.
  for _ in range(2):
    resid = resid - jnp.einsum("bd,bde->be", resid, proj)
  q_norm = jnp.linalg.norm(query, axis=-1, keepdims=True)
  r_norm = jnp.linalg.norm(resid, axis=-1, keepdims=True)
  # Guard the division: a query inside the context span has no orthogonal part.
  return resid * q_norm / jnp.maximum(r_norm, 1e-12)


def overlapping_query(key: jax.Array, context: jax.Array) -> jax.Array:
  """Copies a uniformly chosen context input of each prompt as its query.

  Args:
    key: PRNG key.
    context: [b, m, d] context inputs, m >= 1.

  Returns:
    [b, d] queries, each equal to one of its prompt's context inputs.
  """
  b, m, _ = context.shape
  idx = jax.random.randint(key, (b,), 0, m)
  return jnp.take_along_axis(context, idx[:, None, None], axis=1)[:, 0]
