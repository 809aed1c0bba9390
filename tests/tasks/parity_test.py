"""Tests for ssm_icl.tasks.parity."""

import itertools

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np

from ssm_icl import tasks
from ssm_icl.tasks import base
from tests.tasks import prompt_checks

_B, _N = 64, 40


def _subsets(p, n_dims, k):
  """The k-subsets consistent with each prompt's labels, one per prompt."""
  found = []
  for x, y in zip(p.xs, p.ys[..., 0]):
    fits = [s for s in itertools.combinations(range(n_dims), k)
            if np.array_equal(np.prod(x[:, list(s)], -1), y)]
    found.append(fits)
  return found


class SparseParityTest(parameterized.TestCase):

  def test_sharding_invariance(self):
    prompt_checks.assert_sharding_invariant(self, tasks.SparseParity())

  @parameterized.parameters((None,), (6,))
  def test_labels_are_parities_of_a_per_prompt_subset(self, trunc):
    task = tasks.SparseParity()
    p = jax.device_get(task.sample(jax.random.key(0), _B, _N, trunc))
    visible = 10 if trunc is None else trunc
    np.testing.assert_array_equal(np.abs(p.xs[..., :visible]), 1.0)
    np.testing.assert_array_equal(p.xs[..., visible:], 0.0)
    self.assertEqual(p.xs.dtype, np.float32)
    np.testing.assert_array_equal(np.abs(p.ys), 1.0)
    # Balanced inputs and labels (2560 labels: standard error 0.02).
    np.testing.assert_allclose(p.xs[..., :visible].mean(), 0.0, atol=0.03)
    np.testing.assert_allclose(p.ys.mean(), 0.0, atol=0.08)
    subsets = _subsets(p, 10, 2)
    # 40 points pin the subset down; it lies in the visible coordinates.
    self.assertTrue(all(len(s) == 1 for s in subsets))
    subsets = [s[0] for s in subsets]
    self.assertTrue(all(max(s) < visible for s in subsets))
    # A fresh subset per prompt (45 possible ones for d = 10, k = 2).
    self.assertGreater(len(set(subsets)), 10)
    self.assertEqual((p.loss, p.metric), (base.LOSS_LOGISTIC,
                                          base.METRIC_ACCURACY))
    np.testing.assert_array_equal(p.targets, p.ys)

  def test_reference_shared_subset(self):
    task = tasks.SparseParity(reference_shared_subset=True)
    p = jax.device_get(task.sample(jax.random.key(1), _B, _N))
    subsets = _subsets(p, 10, 2)
    self.assertLen({tuple(s) for s in subsets}, 1)
    self.assertLen(subsets[0], 1)

  def test_perfect_logits_give_zero_loss_and_full_accuracy(self):
    p = tasks.SparseParity(n_dims=6, k=3).sample(jax.random.key(2), 4, 8)
    good = 30.0 * p.targets
    self.assertLess(float(base.masked_loss(good, p)), 1e-6)
    np.testing.assert_array_equal(base.pointwise_metric(good, p), 1.0)
    np.testing.assert_array_equal(base.pointwise_metric(-good, p), 0.0)


if __name__ == "__main__":
  absltest.main()
