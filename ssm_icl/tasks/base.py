"""The `Prompt` contract shared by tasks, models, training and evaluation.

A task is a pure function of a PRNG key that returns a `Prompt`. Models map
`prompt.tokens` to outputs `[batch, length, d_out]`; the predictions that count
are read at `prompt.predict_positions`, compared with `prompt.targets` and
weighted by `prompt.loss_mask` (training) or `prompt.metric_mask` (evaluation).
`pad_prompt` right-pads a prompt to a longer one's shapes with zero masks, so
one compiled program serves every length up to its bucket.

Shapes use these letters:
  b: batch (prompts), l: tokens per prompt, d_in: token width,
  p: prediction slots per prompt, d_out: width of one prediction.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

# Loss names.
LOSS_MSE = "mse"          # mean squared error over the d_out coordinates
LOSS_LOGISTIC = "logistic"  # binary cross-entropy on sigmoid(pred), y in {-1,+1}

# Metric names.
METRIC_SQUARED_ERROR = "squared_error"  # sum over d_out of (pred - y)^2
METRIC_ACCURACY = "accuracy"            # 1[sign(pred) == y]; pred 0 is wrong


@flax.struct.dataclass
class Prompt:
  """A batch of in-context-learning prompts.

  Attributes:
    tokens: [b, l, d_in] float32 model input.
    predict_positions: [p] int32 token index whose output makes prediction j.
      The same for every prompt in the batch.
    targets: [b, p, d_out] float32 target of each prediction slot.
    loss_mask: [b, p, d_out] float32 training weight of each predicted
      coordinate (0 where the loss must not look, e.g. at outliers).
    metric_mask: [b, p] float32, 1 where the evaluation metric counts.
    example_index: [p] int32, the number of in-context examples that precede
      prediction slot j (the x-axis of the paper's curves).
    loss: static loss name (`LOSS_MSE` or `LOSS_LOGISTIC`).
    metric: static metric name (`METRIC_SQUARED_ERROR` or `METRIC_ACCURACY`).
    normalizer: static divisor applied to the metric for the paper's plots
      (d for regression, CoT and MQAR's per-coordinate error, k for sparse
      regression, 1 for tree and parity).
    metric_coords: static tuple of the d_out coordinates the metric reads
      (None: all). Chain-of-thought reads only its y coordinate.
    xs: optional [b, n, d] raw in-context inputs as a baseline sees them
      (outlier dummies included), for the classical baselines.
    ys: optional [b, n, d_y] raw labels (the true labels, also at outliers).
    example_mask: optional [b, n] float32, 1 where example i is a genuine
      (x, y) pair a baseline may fit on (0 at outliers).
  """

  tokens: jax.Array
  predict_positions: jax.Array
  targets: jax.Array
  loss_mask: jax.Array
  metric_mask: jax.Array
  example_index: jax.Array
  loss: str = flax.struct.field(pytree_node=False, default=LOSS_MSE)
  metric: str = flax.struct.field(
      pytree_node=False, default=METRIC_SQUARED_ERROR)
  normalizer: float = flax.struct.field(pytree_node=False, default=1.0)
  metric_coords: tuple[int, ...] | None = flax.struct.field(
      pytree_node=False, default=None)
  xs: jax.Array | None = None
  ys: jax.Array | None = None
  example_mask: jax.Array | None = None

  @property
  def batch_size(self) -> int:
    return self.tokens.shape[0]


def pad_prompt(prompt: Prompt, like: Prompt) -> Prompt:
  """Right-pads every array of `prompt` with zeros to the shapes of `like`.

  This is how a prompt of n examples joins a length bucket of m >= n examples
  (`ssm_icl.train.buckets`): `like` is the structure (e.g. `jax.eval_shape`)
  of the same task's prompt of m examples. Every axis that differs is padded
  at its end, so the real tokens keep their positions and the padding comes
  after them; a causal model's outputs at the real tokens are therefore those
  of the unpadded prompt. Padded prediction slots have loss_mask =
  metric_mask = 0 (and read token 0, a valid index), padded examples have
  example_mask = 0, so the masked loss, the metric sums and their gradients
  equal the unpadded prompt's up to summation order. Per-slot "last" values
  must be read at the unpadded prompt's last slot, not at index -1.

  Args:
    prompt: a prompt of n examples.
    like: a prompt (or its abstract structure) of the same task with m >= n
      examples: same fields, ranks and static attributes.

  Returns:
    The padded prompt, with `like`'s shapes.

  Raises:
    ValueError: if a field of `like` is missing, has another rank or is
      smaller than the prompt's.
  """
  changes = {}
  for name in ("tokens", "predict_positions", "targets", "loss_mask",
               "metric_mask", "example_index", "xs", "ys", "example_mask"):
    value, target = getattr(prompt, name), getattr(like, name)
    if value is None and target is None:
      continue
    if (value is None or target is None or value.ndim != len(target.shape)
        or any(a > b for a, b in zip(value.shape, target.shape))):
      raise ValueError(
          f"Cannot pad Prompt.{name} of shape "
          f"{None if value is None else value.shape} to "
          f"{None if target is None else target.shape}; expected the same "
          "rank and no axis larger than the target's.")
    widths = [(0, b - a) for a, b in zip(value.shape, target.shape)]
    changes[name] = value if not any(w for _, w in widths) else jnp.pad(
        value, widths)
  return prompt.replace(**changes)


def gather_predictions(outputs: jax.Array, prompt: Prompt) -> jax.Array:
  """Reads the predictions of a model at the prompt's prediction slots.

  Args:
    outputs: [b, l, d_out] model outputs.
    prompt: the prompt the outputs were computed from.

  Returns:
    [b, p, d_out] predictions aligned with `prompt.targets`.
  """
  return jnp.take(outputs, prompt.predict_positions, axis=1)


def pointwise_loss(preds: jax.Array, prompt: Prompt) -> jax.Array:
  """Per-coordinate training loss, [b, p, d_out], before masking."""
  preds = preds.astype(jnp.float32)
  if prompt.loss == LOSS_MSE:
    return jnp.square(preds - prompt.targets)
  if prompt.loss == LOSS_LOGISTIC:
    # BCE(sigmoid(pred), (y + 1) / 2) = softplus(-y * pred) for y in {-1, +1}.
    return jax.nn.softplus(-prompt.targets * preds)
  raise ValueError(
      f"Prompt.loss={prompt.loss!r} is unknown; expected one of "
      f"{[LOSS_MSE, LOSS_LOGISTIC]}.")


def masked_loss(preds: jax.Array, prompt: Prompt) -> jax.Array:
  """Scalar training loss: the masked mean of `pointwise_loss`."""
  per = pointwise_loss(preds, prompt) * prompt.loss_mask
  return per.sum() / jnp.maximum(prompt.loss_mask.sum(), 1.0)


def pointwise_metric(preds: jax.Array, prompt: Prompt) -> jax.Array:
  """Per-slot evaluation metric, [b, p], normalised for the paper's plots.

  Squared error is summed over the d_out coordinates and divided by
  `prompt.normalizer`; accuracy is 1[sign(pred) == y] on coordinate 0.
  """
  preds = preds.astype(jnp.float32)
  targets = prompt.targets
  if prompt.metric_coords is not None:
    coords = jnp.asarray(prompt.metric_coords)
    preds, targets = preds[..., coords], targets[..., coords]
  if prompt.metric == METRIC_SQUARED_ERROR:
    err = jnp.square(preds - targets).sum(-1)
    return err / prompt.normalizer
  if prompt.metric == METRIC_ACCURACY:
    return (jnp.sign(preds[..., 0]) == targets[..., 0]).astype(
        jnp.float32)
  raise ValueError(
      f"Prompt.metric={prompt.metric!r} is unknown; expected one of "
      f"{[METRIC_SQUARED_ERROR, METRIC_ACCURACY]}.")
