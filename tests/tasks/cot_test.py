"""Tests for ssm_icl.tasks.cot."""

import functools

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from ssm_icl import models
from ssm_icl import tasks
from ssm_icl.tasks import base
from tests.tasks import prompt_checks

_B, _N, _D, _H = 32, 8, 6, 3


def _sample(trunc=None, seed=0):
  task = tasks.CotIO(n_dims=_D, hidden=_H)
  return task, jax.device_get(
      task.sample(jax.random.key(seed), _B, _N, trunc))


class CotIOTest(parameterized.TestCase):

  def test_sharding_invariance(self):
    prompt_checks.assert_sharding_invariant(
        self, tasks.CotIO(n_dims=_D, hidden=_H), n_dims_truncated=4)

  def test_token_layout(self):
    task, p = _sample(trunc=4)
    self.assertEqual(task.d_in, _D + _H + 4)
    x_tok, s_tok, y_tok = (p.tokens[:, i::3] for i in range(3))
    s = s_tok[..., _D:_D + _H]
    y = y_tok[..., _D + _H]
    np.testing.assert_array_equal(x_tok[..., :_D], p.xs)
    np.testing.assert_array_equal(p.xs[..., 4:], 0.0)
    np.testing.assert_array_equal(y, p.ys[..., 0])
    for tok, kind in ((x_tok, 0), (s_tok, 1), (y_tok, 2)):
      np.testing.assert_array_equal(tok[..., -3:],
                                    np.broadcast_to(np.eye(3)[kind],
                                                    tok[..., -3:].shape))
    # Each token type uses only its own channels.
    np.testing.assert_array_equal(x_tok[..., _D:-3], 0.0)
    np.testing.assert_array_equal(s_tok[..., :_D], 0.0)
    np.testing.assert_array_equal(s_tok[..., _D + _H:-3], 0.0)
    np.testing.assert_array_equal(y_tok[..., :_D + _H], 0.0)
    # s is a ReLU layer (about half zeros) and y is linear in s.
    self.assertTrue(np.all(s >= 0.0))
    self.assertBetween(np.mean(s == 0.0), 0.3, 0.7)
    for si, yi in zip(s, y):
      v = np.linalg.lstsq(si, yi, rcond=None)[0]
      np.testing.assert_allclose(si @ v, yi, atol=1e-4)

  def test_targets_and_masks(self):
    task, p = _sample()
    s = p.tokens[:, 1::3, _D:_D + _H]
    np.testing.assert_array_equal(
        p.predict_positions, np.stack([3 * np.arange(_N),
                                       3 * np.arange(_N) + 1], 1).ravel())
    np.testing.assert_array_equal(p.example_index, np.repeat(np.arange(_N), 2))
    at_x, at_s = p.targets[:, 0::2], p.targets[:, 1::2]
    np.testing.assert_array_equal(at_x[..., :_H], s)
    np.testing.assert_array_equal(at_s[..., _H], p.ys[..., 0])
    np.testing.assert_array_equal(p.loss_mask[:, 0::2],
                                  np.broadcast_to([1, 1, 1, 0], at_x.shape))
    np.testing.assert_array_equal(p.loss_mask[:, 1::2],
                                  np.broadcast_to([0, 0, 0, 1], at_s.shape))
    np.testing.assert_array_equal(p.metric_mask[:, 0::2], 0.0)
    np.testing.assert_array_equal(p.metric_mask[:, 1::2], 1.0)
    self.assertEqual(p.metric_coords, (task.y_coord,))
    # The metric reads only y: errors in the s coordinates do not count.
    preds = jnp.asarray(p.targets).at[..., :_H].add(5.0)
    np.testing.assert_allclose(base.pointwise_metric(preds, p), 0.0)

  def test_label_scale(self):
    _, p = _sample(seed=3)
    # f(x) = v . ReLU(W^T x) sqrt(2 / h): E[y^2] = d.
    np.testing.assert_allclose(np.mean(p.ys**2), _D, rtol=0.3)

  @parameterized.parameters(("query",), ("all",))
  def test_autoregressive_predict(self, mode):
    task, p = _sample()

    def predict_fn(tokens):
      # A causal toy model: at every token it proposes s = the token's first
      # h channels; its y output is the s channels' sum of this token plus
      # 0.01 times that of all earlier tokens.
      s_sum = tokens[..., _D:_D + _H].sum(-1)
      earlier = jnp.cumsum(s_sum, axis=1) - s_sum
      return jnp.concatenate(
          [tokens[..., :_H], (s_sum + 0.01 * earlier)[..., None]], -1)

    preds = np.asarray(tasks.cot_autoregressive_predict(
        predict_fn, p, task, mode=mode))
    self.assertEqual(preds.shape, p.targets.shape)
    s_true = p.tokens[:, 1::3, _D:_D + _H].sum(-1)  # [b, n]
    s_hat = p.xs[..., :_H].sum(-1)  # the toy model's s proposal
    context = s_true if mode == "query" else s_hat
    earlier = np.cumsum(context, 1) - context
    np.testing.assert_allclose(preds[:, 1::2, _H], s_hat + 0.01 * earlier,
                               rtol=1e-5, atol=1e-5)
    # x slots: the teacher-forced proposals.
    np.testing.assert_allclose(preds[:, 0::2, :_H], p.xs[..., :_H])
    with self.assertRaisesRegex(ValueError, "mode='beam' is unknown"):
      tasks.cot_autoregressive_predict(predict_fn, p, task, mode="beam")


  @parameterized.parameters("mamba", "hybrid")
  def test_recurrent_predict_equals_one_pass_per_example(self, family):
    task = tasks.CotIO(n_dims=_D, hidden=_H)
    p = task.sample(jax.random.key(3), 2, 4)
    model = models.ICLModel(models.ModelConfig(
        family=family, n_layer=2, d_model=16, n_head=2, d_state=4,
        d_in=task.d_in, d_out=task.d_out, n_positions=12))
    params = model.init(jax.random.key(4), p.tokens)["params"]
    want = tasks.cot_autoregressive_predict(
        lambda t: model.apply({"params": params}, t), p, task)
    got = jax.jit(lambda params, p: tasks.cot_recurrent_predict(
        functools.partial(model.decode_step, params),
        model.init_cache(2, 12), p, task))(params, p)
    want = np.asarray(want)
    np.testing.assert_allclose(got, want, rtol=1e-5,
                               atol=1e-5 * np.abs(want).max())


if __name__ == "__main__":
  absltest.main()
