"""A 2-layer ReLU network trained by gradient descent on each prefix (JAX/optax).

Garg et al.'s `GDModel` baseline: for every prompt and every prefix, a fresh
network x -> W2 relu(W1 x + b1) + b2 (hidden width 100, PyTorch's default
uniform init) is trained with Adam (lr 5e-3) for a fixed number of steps on
the squared error of a random minibatch of the prefix (batch 100, i.e. the
whole prefix for prompts of at most 101 points), then predicts the query.

All (prompt, slot) networks train at once: `vmap` over the prompts inside a
`lax.map` over chunks of slots, with the prefix as a 0/1 weight on the
examples, so no network ever sees an example outside its prefix.

Shapes: b prompts, n examples, d input width, d_y label width, p slots,
h hidden width.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import optax

from ssm_icl.baselines import prefix
from ssm_icl.tasks import base


def _init(key: jax.Array, d: int, hidden: int, d_y: int) -> dict:
  """PyTorch `nn.Linear` default init: U(+-1/sqrt(fan_in)) weights and bias."""
  k1, k2, k3, k4 = jax.random.split(key, 4)
  s1, s2 = 1.0 / jnp.sqrt(d), 1.0 / jnp.sqrt(hidden)
  uniform = jax.random.uniform
  return {
      "w1": uniform(k1, (d, hidden), jnp.float32, -s1, s1),
      "b1": uniform(k2, (hidden,), jnp.float32, -s1, s1),
      "w2": uniform(k3, (hidden, d_y), jnp.float32, -s2, s2),
      "b2": uniform(k4, (d_y,), jnp.float32, -s2, s2),
  }


def _apply(params: dict, x: jax.Array) -> jax.Array:
  """x: [..., d] -> [..., d_y]."""
  h = jax.nn.relu(x @ params["w1"] + params["b1"])
  return h @ params["w2"] + params["b2"]


def _minibatch(key: jax.Array, mask: jax.Array, batch_size: int) -> jax.Array:
  """A uniformly random subset of at most `batch_size` prefix examples, [n]."""
  if batch_size >= mask.shape[-1]:
    return mask
  # Random scores, -inf outside the prefix; the batch_size largest form a
  # uniform random subset of the prefix (all of it if it is smaller).
  scores = jnp.where(mask > 0, jax.random.uniform(key, mask.shape), -jnp.inf)
  threshold = jax.lax.top_k(scores, batch_size)[0][..., -1:]
  return (mask > 0) & (scores >= threshold)


def _train_and_predict(key, xs, ys, mask, query, *, hidden, steps,
                       learning_rate, batch_size):
  """Trains one network on (xs, ys) weighted by `mask`; predicts `query`.

  Args:
    key: PRNG key of this (prompt, slot).
    xs: [n, d] inputs. ys: [n, d_y] labels. mask: [n] prefix weights.
    query: [d] query input.
    hidden, steps, learning_rate, batch_size: static hyperparameters.

  Returns:
    [d_y] prediction, 0 when the prefix is empty.
  """
  init_key, batch_key = jax.random.split(key)
  params = _init(init_key, xs.shape[-1], hidden, ys.shape[-1])
  optimizer = optax.adam(learning_rate)

  def loss_fn(params, weight):
    err = jnp.square(_apply(params, xs) - ys).mean(-1)   # [n]
    # A weighted mean over the minibatch; the 0 weights outside the prefix
    # make the loss and its gradient independent of those examples.
    return jnp.sum(weight * err) / jnp.maximum(weight.sum(), 1.0)

  def step(carry, step_key):
    params, opt_state = carry
    weight = _minibatch(step_key, mask, batch_size).astype(jnp.float32)
    grads = jax.grad(loss_fn)(params, weight)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), None

  (params, _), _ = jax.lax.scan(
      step, (params, optimizer.init(params)),
      jax.random.split(batch_key, steps))
  return jnp.where(mask.sum() > 0, _apply(params, query), 0.0)


@functools.partial(
    jax.jit,
    static_argnames=("hidden", "steps", "learning_rate", "batch_size"))
def _gd_network(view: prefix.PrefixView, key: jax.Array, *, hidden, steps,
                learning_rate, batch_size) -> jax.Array:
  """Trains and evaluates every (prompt, slot) network, [b, p, d_y]."""
  b, p = view.queries.shape[:2]
  train = functools.partial(
      _train_and_predict, hidden=hidden, steps=steps,
      learning_rate=learning_rate, batch_size=batch_size)
  # One key per (prompt, slot): the init and minibatches of the network at a
  # slot depend on its position only, never on other slots' data.
  keys = jnp.swapaxes(jax.random.split(key, (b, p)), 0, 1)   # [p, b]
  queries = jnp.swapaxes(view.queries, 0, 1)                 # [p, b, d]
  masks = jnp.swapaxes(view.prefix_mask, 0, 1)               # [p, b, n]
  per_slot = jax.vmap(train, in_axes=(0, 0, 0, 0, 0))
  n, d = view.xs.shape[1:]
  # Each slot chunk holds about chunk * b * n * hidden activations.
  chunk = max(1, (1 << 22) // max(1, b * n * max(hidden, d)))
  preds = jax.lax.map(
      lambda a: per_slot(a[0], view.xs, view.ys, a[1], a[2]),
      (keys, masks, queries), batch_size=chunk)
  return jnp.swapaxes(preds, 0, 1)


@dataclasses.dataclass(frozen=True)
class GDTwoLayerNetwork(prefix.Baseline):
  """2-layer ReLU network trained with Adam on each prefix.

  Attributes:
    hidden: hidden width, >= 1.
    steps: Adam steps per network, >= 1.
    learning_rate: Adam learning rate, > 0.
    batch_size: examples per step (the whole prefix when it is smaller).
    seed: PRNG seed of the initialisations and minibatches.
  """

  hidden: int = 100
  steps: int = 100
  learning_rate: float = 5e-3
  batch_size: int = 100
  seed: int = 0

  def __post_init__(self):
    for field in ("hidden", "steps", "batch_size"):
      value = getattr(self, field)
      if not (isinstance(value, int) and value >= 1):
        raise ValueError(
            f"GDTwoLayerNetwork.{field} must be an int >= 1, got {value!r}.")
    if not self.learning_rate > 0:
      raise ValueError(
          f"GDTwoLayerNetwork.learning_rate must be > 0, got "
          f"{self.learning_rate}.")

  def __call__(self, prompt: base.Prompt) -> jax.Array:
    view = prefix.prefix_view(prompt, name="gd_2nn")
    preds = _gd_network(
        view, jax.random.key(self.seed), hidden=self.hidden,
        steps=self.steps, learning_rate=float(self.learning_rate),
        batch_size=self.batch_size)
    return prefix.to_targets(preds, prompt)
