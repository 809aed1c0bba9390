"""Chain-of-thought I/O on 2-layer ReLU networks (docs/PAPER.md §3.8).

Li et al. (2023), "Dissecting Chain-of-Thought": f(x) = v^T s(x) with the
hidden layer s(x) = ReLU(W^T x) sqrt(2 / hidden), x ~ N(0, I_d),
W in R^{d x hidden} and v in R^{hidden} with N(0, 1) entries, one network per
prompt. Each example is three tokens x_i, s_i, y_i; the model predicts s_i at
x_i's token and y_i at s_i's token, teacher-forced in training.

Token layout (d_in = d + hidden + 4): channels [0, d) hold x, [d, d + h) hold
s, channel d + h holds y, and the last three channels one-hot the token type
(x, s, y). Li et al. use a separate read-in per token type; a single linear
read-in on this layout is exactly that (each type has its own weight block,
and the type channel gives it its own bias).

Outputs (d_out = hidden + 1): coordinates [0, h) predict s, coordinate h
predicts y. Prediction slots alternate x_1, s_1, x_2, s_2, ... (tokens 3i and
3i + 1); `loss_mask` selects the s coordinates at x slots and the y
coordinate at s slots, so the training loss is the mean squared error over
every scored coordinate (Li et al. sum the s error over its coordinates and
add the y error; the weighting differs by a constant per coordinate type).
`metric_coords` = (h,) and `metric_mask` = 1 at s slots only: the metric is
the squared error of y divided by d: E[y^2] = d, so the zero predictor
scores about 1, as on every other regression task (the paper does not state
a CoT normalisation; this follows its rule for regression, divide by d).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, ClassVar

import jax
import jax.numpy as jnp

from ssm_icl.tasks import base
from ssm_icl.tasks import regression
from ssm_icl.tasks import task as task_lib

AUTOREGRESSIVE_MODES = ("query", "all")


@dataclasses.dataclass(frozen=True)
class CotIO(task_lib.Task):
  """CoT-I/O prompts (x_i, s_i, y_i) of a random 2-layer ReLU network.

  Defaults follow Li et al.'s `cot_2nn` config: d = 10, hidden = 4,
  101 points at the end of the curriculum. The exact settings of the Mamba
  paper are unconfirmed (docs/PAPER.md §3.8).

  Attributes:
    n_dims: input dimension d.
    hidden: hidden width h (the chain-of-thought step has h coordinates).
  """

  name: ClassVar[str] = "cot_io"
  n_dims: int = 10
  hidden: int = 4

  def __post_init__(self):
    task_lib.check_positive_int("n_dims", self.n_dims)
    task_lib.check_positive_int("hidden", self.hidden)

  @property
  def d_in(self) -> int:
    return self.n_dims + self.hidden + 4

  @property
  def d_out(self) -> int:
    return self.hidden + 1

  @property
  def default_n_points(self) -> int:
    return 101

  @property
  def normalizer(self) -> float:
    return float(self.n_dims)

  @property
  def y_coord(self) -> int:
    """The output coordinate that predicts y."""
    return self.hidden

  def seq_len(self, n_points: int) -> int:
    task_lib.check_positive_int("n_points", n_points)
    return 3 * n_points

  def hidden_tokens(self, s: jax.Array) -> jax.Array:
    """Embeds hidden layers [b, n, h] as s tokens [b, n, d_in]."""
    d, h = self.n_dims, self.hidden
    b, n, _ = s.shape
    zeros = lambda w: jnp.zeros((b, n, w), s.dtype)
    type_s = jnp.broadcast_to(jnp.array([0.0, 1.0, 0.0], s.dtype), (b, n, 3))
    return jnp.concatenate([zeros(d), s, zeros(1), type_s], axis=-1)

  def _tokens(self, x, s, y):
    """[b, 3n, d_in] tokens from x [b, n, d], s [b, n, h], y [b, n]."""
    d, h = self.n_dims, self.hidden
    b, n, _ = x.shape
    zeros = lambda w: jnp.zeros((b, n, w), x.dtype)
    type_onehot = lambda i: jnp.broadcast_to(
        jax.nn.one_hot(i, 3, dtype=x.dtype), (b, n, 3))
    x_tok = jnp.concatenate([x, zeros(h + 1), type_onehot(0)], axis=-1)
    s_tok = self.hidden_tokens(s)
    y_tok = jnp.concatenate([zeros(d + h), y[..., None], type_onehot(2)],
                            axis=-1)
    return jnp.stack([x_tok, s_tok, y_tok], axis=2).reshape(b, 3 * n, -1)

  def _sample(self, key, batch_size, n_points, n_dims_truncated):
    d, h, n = self.n_dims, self.hidden, n_points
    k_w, k_v, k_x = jax.random.split(key, 3)
    w = jax.random.normal(k_w, (batch_size, d, h))
    v = jax.random.normal(k_v, (batch_size, h))
    x = regression.gaussian_inputs(k_x, batch_size, n, d, n_dims_truncated)
    s = jax.nn.relu(jnp.einsum("bnd,bdh->bnh", x, w)) * math.sqrt(2.0 / h)
    y = jnp.einsum("bnh,bh->bn", s, v)

    # Slots alternate (x_i -> s_i) and (s_i -> y_i): [b, n, 2, h + 1].
    zeros_h = jnp.zeros((batch_size, n, h))
    zeros_1 = jnp.zeros((batch_size, n, 1))
    targets = jnp.stack([
        jnp.concatenate([s, zeros_1], -1),
        jnp.concatenate([zeros_h, y[..., None]], -1)], axis=2)
    slot_mask = jnp.stack([
        jnp.concatenate([jnp.ones(h), jnp.zeros(1)]),
        jnp.concatenate([jnp.zeros(h), jnp.ones(1)])])  # [2, h + 1]
    loss_mask = jnp.broadcast_to(slot_mask, (batch_size, n, 2, h + 1))
    metric_mask = jnp.broadcast_to(jnp.array([0.0, 1.0]), (batch_size, n, 2))
    positions = 3 * jnp.arange(n, dtype=jnp.int32)[:, None] + jnp.arange(2)
    return base.Prompt(
        tokens=self._tokens(x, s, y).astype(jnp.float32),
        predict_positions=positions.reshape(-1).astype(jnp.int32),
        targets=targets.reshape(batch_size, 2 * n, h + 1),
        loss_mask=loss_mask.reshape(batch_size, 2 * n, h + 1),
        metric_mask=metric_mask.reshape(batch_size, 2 * n),
        example_index=jnp.repeat(jnp.arange(n, dtype=jnp.int32), 2),
        loss=base.LOSS_MSE,
        metric=base.METRIC_SQUARED_ERROR,
        normalizer=self.normalizer,
        metric_coords=(self.y_coord,),
        xs=x.astype(jnp.float32),
        ys=y[..., None].astype(jnp.float32),
        example_mask=jnp.ones((batch_size, n), jnp.float32),
    )


def cot_autoregressive_predict(
    predict_fn: Callable[[jax.Array], jax.Array], prompt: base.Prompt,
    task: CotIO, mode: str = "query") -> jax.Array:
  """Evaluation-time predictions where y_i follows the model's own s_i.

  First a teacher-forced pass predicts every s_i at its x_i token (exact: the
  prefix up to x_i is the true prompt). Then each s_i token is replaced by
  that prediction and y_i is read at it:

  * mode "query" (default, Li et al.'s CoT evaluation): for slot i only s_i
    is replaced; the in-context examples keep their true s_j. This needs one
    forward pass per example (run sequentially with `lax.map` to bound
    memory).
  * mode "all": every s_i is replaced at once and one more pass reads every
    y_i, so earlier examples also carry predicted hidden layers. Two passes
    in total; cheaper, and a different (harder) protocol.

  Args:
    predict_fn: tokens [b, 3n, d_in] -> outputs [b, 3n, d_out] (causal).
    prompt: a prompt from `task.sample`.
    task: the `CotIO` task that made the prompt.
    mode: "query" or "all".

  Returns:
    [b, 2n, d_out] predictions aligned with `prompt.targets`: s predictions
    at x slots and the autoregressive y prediction (coordinate h) at s slots.
  """
  task_lib.check_choice("mode", mode, AUTOREGRESSIVE_MODES)
  tokens = jnp.asarray(prompt.tokens)
  b, length, _ = tokens.shape
  n = length // 3
  h = task.hidden
  x_pos = 3 * jnp.arange(n)
  s_pos = x_pos + 1

  teacher = predict_fn(tokens)  # [b, 3n, d_out]
  s_hat = teacher[:, x_pos, :h]  # [b, n, h]
  s_hat_tokens = task.hidden_tokens(s_hat)  # [b, n, d_in]

  if mode == "all":
    fed = tokens.at[:, s_pos].set(s_hat_tokens)
    y_out = predict_fn(fed)[:, s_pos]  # [b, n, d_out]
  else:
    def one_slot(i):
      fed = jax.lax.dynamic_update_slice_in_dim(
          tokens, jax.lax.dynamic_slice_in_dim(s_hat_tokens, i, 1, axis=1),
          3 * i + 1, axis=1)
      return jax.lax.dynamic_index_in_dim(predict_fn(fed), 3 * i + 1, axis=1,
                                          keepdims=False)  # [b, d_out]
    y_out = jnp.moveaxis(jax.lax.map(one_slot, jnp.arange(n)), 0, 1)

  at_x = teacher[:, x_pos]  # [b, n, d_out]
  return jnp.stack([at_x, y_out], axis=2).reshape(b, 2 * n, -1)


def cot_recurrent_predict(
    decode_step: Callable[[Any, jax.Array], tuple[jax.Array, Any]],
    cache: Any, prompt: base.Prompt, task: CotIO) -> jax.Array:
  """`cot_autoregressive_predict` in mode "query", in one recurrent pass.

  Walks the prompt once with a decoding cache: after x_i (true prefix) the
  output is the s_i prediction; from that cache one extra step feeds the
  predicted s_i token and reads y_i, and its cache is discarded; then the
  true s_i and y_i tokens advance the cache. 4n decode steps per prompt
  instead of n full forward passes (one per example).

  Args:
    decode_step: (cache, token [b, d_in]) -> (output [b, d_out], cache),
      e.g. `functools.partial(model.decode_step, params)`.
    cache: the decoding cache at the sequence start (for 3n tokens), e.g.
      `model.init_cache(b, 3n)`.
    prompt: a prompt from `task.sample`.
    task: the `CotIO` task that made the prompt.

  Returns:
    [b, 2n, d_out] predictions aligned with `prompt.targets`, as
    `cot_autoregressive_predict(..., mode="query")`.
  """
  tokens = jnp.asarray(prompt.tokens)
  b, length, d_in = tokens.shape
  n = length // 3
  h = task.hidden
  triples = jnp.moveaxis(tokens.reshape(b, n, 3, d_in), 1, 0)  # [n, b, 3, d]

  def example(cache, xsy):
    at_x, cache = decode_step(cache, xsy[:, 0])  # [b, d_out]
    s_hat = task.hidden_tokens(at_x[:, None, :h])[:, 0]  # [b, d_in]
    y_out, _ = decode_step(cache, s_hat)  # the branch on predicted s_i
    _, cache = decode_step(cache, xsy[:, 1])
    _, cache = decode_step(cache, xsy[:, 2])
    return cache, jnp.stack([at_x, y_out], axis=1)  # [b, 2, d_out]

  _, out = jax.lax.scan(example, cache, triples)  # [n, b, 2, d_out]
  return jnp.moveaxis(out, 0, 1).reshape(b, 2 * n, -1)
