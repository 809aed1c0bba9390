"""Tests for ssm_icl.tasks.outliers."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np

from ssm_icl import tasks
from ssm_icl.tasks import outliers
from tests.tasks import prompt_checks

_B, _N, _D = 64, 32, 5


def _sample(task, trunc=None, seed=0):
  return jax.device_get(task.sample(jax.random.key(seed), _B, _N, trunc))


def _clean_weights(p, visible):
  """Least-squares w of each prompt from its clean examples only, [b, d]."""
  ws = []
  for x, y, m in zip(p.xs, p.ys[..., 0], p.example_mask > 0):
    w = np.zeros(x.shape[-1])
    w[:visible] = np.linalg.lstsq(x[m][:, :visible], y[m], rcond=None)[0]
    ws.append(w)
  return np.stack(ws)


def _check_masks(test, p, outlier):
  clean = 1.0 - outlier
  np.testing.assert_array_equal(p.example_mask, clean)
  np.testing.assert_array_equal(p.metric_mask, clean)
  np.testing.assert_array_equal(p.loss_mask[..., 0], clean)
  test.assertEqual(p.normalizer, _D)


class OrthoOutlierTest(parameterized.TestCase):

  @parameterized.parameters(
      (tasks.OrthoOutlierRegression(n_dims=6),),
      (tasks.ManyOutlierRegression(n_dims=6),))
  def test_sharding_invariance(self, task):
    prompt_checks.assert_sharding_invariant(self, task, n_dims_truncated=4)

  @parameterized.parameters((None,), (3,))
  def test_dummies_are_orthogonal_to_the_prompts_w(self, trunc):
    task = tasks.OrthoOutlierRegression(n_dims=_D)
    p = _sample(task, trunc)
    outlier = 1.0 - p.example_mask
    # Outlier fraction close to p = 0.5 (2048 draws, standard error 0.011).
    np.testing.assert_allclose(outlier.mean(), 0.5, atol=0.04)
    _check_masks(self, p, outlier)
    x_tok, y_tok = p.tokens[:, 0::2], p.tokens[:, 1::2]
    np.testing.assert_array_equal(x_tok, p.xs)
    visible = _D if trunc is None else trunc
    w = _clean_weights(p, visible)
    for i in range(_B):
      out = outlier[i] > 0
      self.assertGreater(out.sum(), 0)
      # One dummy per prompt for x, another for y, shared by its outliers.
      dx, dy = x_tok[i][out], y_tok[i][out]
      np.testing.assert_array_equal(dx, dx[:1].repeat(len(dx), 0))
      np.testing.assert_array_equal(dy, dy[:1].repeat(len(dy), 0))
      self.assertFalse(np.allclose(dx[0], dy[0]))
      for dummy in (dx[0], dy[0]):
        np.testing.assert_allclose(np.linalg.norm(dummy), np.sqrt(_D),
                                   rtol=1e-5)
        np.testing.assert_allclose(dummy @ w[i], 0.0, atol=1e-3)
      # Clean y tokens are [y, 0, ..., 0] with the true label.
      clean = ~out
      np.testing.assert_array_equal(y_tok[i][clean][:, 0], p.ys[i, clean, 0])
      np.testing.assert_array_equal(y_tok[i][clean][:, 1:], 0.0)
    if trunc is not None:
      # Clean inputs are truncated; the dummies are full d-vectors.
      clean_x = x_tok[p.example_mask > 0]
      np.testing.assert_array_equal(clean_x[:, trunc:], 0.0)
      self.assertTrue(np.any(x_tok[outlier > 0][:, trunc:] != 0.0))

  def test_reference_fresh_w(self):
    task = tasks.OrthoOutlierRegression(n_dims=_D, reference_fresh_w=True)
    p = _sample(task)
    w = _clean_weights(p, _D)
    cosines = []
    for i in range(_B):
      out = p.example_mask[i] == 0
      dummy = p.tokens[i, 0::2][out][0]
      cosines.append(dummy @ w[i] / np.linalg.norm(w[i]) / np.sqrt(_D))
    # Orthogonal to an unrelated vector: not to w (|cos| ~ 0.4 for d = 5).
    self.assertGreater(np.mean(np.abs(cosines)), 0.2)

  def test_orthogonal_dummy(self):
    w = jax.random.normal(jax.random.key(0), (16, 7))
    dummy = np.asarray(outliers.orthogonal_dummy(jax.random.key(1), w))
    np.testing.assert_allclose(np.sum(dummy * np.asarray(w), -1), 0.0,
                               atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(dummy, axis=-1), np.sqrt(7),
                               rtol=1e-5)


class ManyOutlierTest(parameterized.TestCase):

  def test_constant_outliers(self):
    p = _sample(tasks.ManyOutlierRegression(n_dims=_D), trunc=2)
    outlier = 1.0 - p.example_mask
    np.testing.assert_allclose(outlier.mean(), 0.9, atol=0.04)
    _check_masks(self, p, outlier)
    out = outlier > 0
    x_tok, y_tok = p.tokens[:, 0::2], p.tokens[:, 1::2]
    # All-ones x (every coordinate, even truncated) and y token [1, 0, ...].
    np.testing.assert_array_equal(x_tok[out], 1.0)
    np.testing.assert_array_equal(y_tok[out][:, 0], 1.0)
    np.testing.assert_array_equal(y_tok[out][:, 1:], 0.0)
    np.testing.assert_array_equal(x_tok[~out][:, 2:], 0.0)

  def test_fixed_layout_and_no_outliers(self):
    fixed = _sample(tasks.ManyOutlierRegression(n_dims=_D, prob=0.75,
                                                outlier_layout="fixed"))
    want = 1.0 - outliers.fixed_outlier_pattern(_N, 0.75)
    np.testing.assert_array_equal(fixed.example_mask,
                                  np.broadcast_to(want, (_B, _N)))
    none = _sample(tasks.ManyOutlierRegression(n_dims=_D, prob=0.0))
    np.testing.assert_array_equal(none.example_mask, 1.0)
    np.testing.assert_array_equal(none.tokens[:, 0::2], none.xs)

  @parameterized.parameters((0.5, 20), (0.9, 20), (0.25, 12), (1.0, 5))
  def test_fixed_outlier_pattern(self, prob, n):
    pattern = outliers.fixed_outlier_pattern(n, prob)
    # The first i examples hold floor(i p) outliers, evenly spread.
    np.testing.assert_array_equal(np.cumsum(pattern),
                                  np.floor(np.arange(1, n + 1) * prob + 1e-9))
    if prob == 0.5:
      np.testing.assert_array_equal(pattern, np.arange(n) % 2 == 1)


if __name__ == "__main__":
  absltest.main()
