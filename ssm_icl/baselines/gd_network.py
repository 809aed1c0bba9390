"""A 2-layer ReLU network trained by gradient descent on each prefix (JAX).

Garg et al.'s `GDModel` baseline: for every prompt and every prefix, a fresh
network x -> W2 relu(W1 x + b1) + b2 (hidden width 100, PyTorch's default
uniform init) is trained with Adam (lr 5e-3) for a fixed number of steps on
the squared error of a random minibatch of the prefix (batch 100, i.e. the
whole prefix for prompts of at most 101 points), then predicts the query.

All (slot, prompt) networks of a chunk of slots train together as one batched
network: parameters carry leading [slots, prompts] axes, the loss is the sum
of the networks' losses (so each network gets exactly its own gradient) and
Adam is elementwise (so each network gets exactly its own update). The prefix
enters as 0/1 example weights, so no network ever sees an example outside its
prefix. Written batched rather than `vmap`-ed over a per-network `scan`,
which compiles several times faster on CPU.

Randomness: `init_key, batch_key = split(key(seed))`; the networks of slot j
are initialised from `fold_in(init_key, j)` (one draw with a leading prompt
axis) and draw their minibatches from `fold_in(batch_key, j * steps + step)`,
so results do not depend on how the slots are chunked.

Shapes: b prompts, n examples, d input width, d_y label width, p slots,
c slots in a chunk, h hidden width.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import optax

from ssm_icl.baselines import prefix
from ssm_icl.tasks import base

# Upper bound on the hidden activations ([c, b, n, h]) of one chunk of slots.
_CHUNK_ELEMENTS = 1 << 22


def _init(key: jax.Array, lead: tuple[int, ...], d: int, hidden: int,
          d_y: int) -> dict:
  """PyTorch `nn.Linear` default init, U(+-1/sqrt(fan_in)) weights and biases.

  One uniform draw is cut into the four parameters: every separate
  `jax.random` call adds a threefry instance, which is slow to compile on CPU.

  Args:
    key: PRNG key.
    lead: leading axes of independent networks (e.g. (b,)).
    d, hidden, d_y: input, hidden and output widths.

  Returns:
    {"w1": [*lead, d, h], "b1": [*lead, h], "w2": [*lead, h, d_y],
     "b2": [*lead, d_y]}.
  """
  shapes = {"w1": (d, hidden), "b1": (hidden,), "w2": (hidden, d_y),
            "b2": (d_y,)}
  fan_in = {"w1": d, "b1": d, "w2": hidden, "b2": hidden}
  sizes = [math.prod(shape) for shape in shapes.values()]
  u = jax.random.uniform(key, (*lead, sum(sizes)), jnp.float32, -1.0, 1.0)
  params, start = {}, 0
  for (name, shape), size in zip(shapes.items(), sizes):
    piece = u[..., start:start + size].reshape(*lead, *shape)
    params[name] = piece / math.sqrt(fan_in[name])
    start += size
  return params


def _apply(params: dict, x: jax.Array) -> jax.Array:
  """x: [..., n, d] -> [..., n, d_y]; leading axes broadcast with params'."""
  h = jax.nn.relu(x @ params["w1"] + params["b1"][..., None, :])
  return h @ params["w2"] + params["b2"][..., None, :]


def _minibatch(key: jax.Array, mask: jax.Array, batch_size: int) -> jax.Array:
  """Uniformly random subsets of at most `batch_size` prefix examples.

  Args:
    key: PRNG key.
    mask: [..., n] prefix weights (0/1).
    batch_size: static subset size.

  Returns:
    [..., n] bool, True on the chosen examples (the whole prefix if smaller).
  """
  if batch_size >= mask.shape[-1]:
    return mask > 0
  # Random scores, -inf outside the prefix; the batch_size largest form a
  # uniform random subset of the prefix (all of it if it is smaller).
  scores = jnp.where(mask > 0, jax.random.uniform(key, mask.shape), -jnp.inf)
  threshold = jax.lax.top_k(scores, batch_size)[0][..., -1:]
  return (mask > 0) & (scores >= threshold)


def _train_chunk(slots, xs, ys, init_key, batch_key, *, hidden, steps,
                 learning_rate, batch_size):
  """Trains the [c, b] networks of a chunk of slots; predicts their queries.

  Args:
    slots: (index [c], query [c, b, d], mask [c, b, n]).
    xs: [b, n, d] inputs. ys: [b, n, d_y] labels.
    init_key, batch_key: the baseline's root keys.
    hidden, steps, learning_rate, batch_size: static hyperparameters.

  Returns:
    [c, b, d_y] predictions, 0 where the prefix is empty.
  """
  index, query, mask = slots
  b, _, d = xs.shape
  d_y = ys.shape[-1]
  params = jax.vmap(
      lambda j: _init(jax.random.fold_in(init_key, j), (b,), d, hidden, d_y)
  )(index)
  optimizer = optax.adam(learning_rate)

  def loss_fn(params, weight):                     # weight: [c, b, n]
    err = jnp.square(_apply(params, xs) - ys).mean(-1)   # [c, b, n]
    # Each network's weighted mean over its minibatch; the 0 weights outside
    # the prefix make loss and gradient independent of those examples.
    per_net = (weight * err).sum(-1) / jnp.maximum(weight.sum(-1), 1.0)
    return per_net.sum()

  def step(carry, t):
    params, opt_state = carry
    # One fold_in per (slot, step): fewer threefry instances to compile.
    keys = jax.vmap(lambda j: jax.random.fold_in(batch_key, j * steps + t))(
        index)
    weight = jax.vmap(lambda k, m: _minibatch(k, m, batch_size))(keys, mask)
    grads = jax.grad(loss_fn)(params, weight.astype(jnp.float32))
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), None

  (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)),
                                jnp.arange(steps))
  preds = _apply(params, query[..., None, :])[..., 0, :]   # [c, b, d_y]
  return jnp.where(mask.sum(-1, keepdims=True) > 0, preds, 0.0)


@functools.partial(
    jax.jit,
    static_argnames=("hidden", "steps", "learning_rate", "batch_size"))
def _gd_network(view: prefix.PrefixView, key: jax.Array, *, hidden, steps,
                learning_rate, batch_size) -> jax.Array:
  """Trains and evaluates every (prompt, slot) network, [b, p, d_y]."""
  b, p = view.queries.shape[:2]
  n = view.xs.shape[1]
  init_key, batch_key = jax.random.split(key)
  train = functools.partial(
      _train_chunk, xs=view.xs, ys=view.ys, init_key=init_key,
      batch_key=batch_key, hidden=hidden, steps=steps,
      learning_rate=learning_rate, batch_size=batch_size)
  slots = (jnp.arange(p), jnp.swapaxes(view.queries, 0, 1),
           jnp.swapaxes(view.prefix_mask, 0, 1))
  chunk = max(1, _CHUNK_ELEMENTS // max(1, b * n * hidden))
  preds = prefix.chunked_map(train, slots, chunk)          # [p, b, d_y]
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
