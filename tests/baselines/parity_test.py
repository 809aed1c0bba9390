"""Tests for ssm_icl/baselines/parity.py."""

import itertools

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np

from ssm_icl import tasks
from ssm_icl.baselines import parity
from ssm_icl.tasks import base


def _numpy_parity(prompt, k, rule):
  """Enumerates the consistent k-subsets of every prefix in numpy."""
  xs, ys = np.asarray(prompt.xs), np.asarray(prompt.ys)[..., 0]
  b, n, d = xs.shape
  subsets = list(itertools.combinations(range(d), k))
  out = np.zeros((b, n))
  for i in range(b):
    for j in range(n):
      ok = [s for s in subsets
            if np.all(np.prod(xs[i, :j][:, list(s)], -1) == ys[i, :j])]
      votes = [np.prod(xs[i, j, list(s)]) for s in ok]
      vote = np.sum(votes)
      out[i, j] = votes[0] if rule == "first" or vote == 0 else np.sign(vote)
  return out


class ParityBayesTest(parameterized.TestCase):

  @parameterized.parameters("majority", "first")
  def test_matches_enumeration(self, rule):
    task = tasks.get_task("sparse_parity", n_dims=5, k=2)
    prompt = task.sample(jax.random.key(0), 3, 8)
    got = parity.ParityBayes(k=2, rule=rule)(prompt)
    np.testing.assert_array_equal(got[..., 0], _numpy_parity(prompt, 2, rule))

  def test_reaches_accuracy_one(self):
    # After ~log2 C(10, 2) examples the subset is pinned down; by 40 it is
    # unique with overwhelming probability, so every later answer is right.
    task = tasks.get_task("sparse_parity", n_dims=10, k=2)
    prompt = task.sample(jax.random.key(1), 64, 60)
    acc = np.asarray(base.pointwise_metric(
        parity.ParityBayes(k=2)(prompt), prompt))
    np.testing.assert_array_equal(acc[:, 40:], 1.0)
    # Without examples it is no better than chance.
    self.assertLess(acc[:, 0].mean(), 0.75)

  def test_rejects_k_larger_than_d(self):
    prompt = tasks.get_task("sparse_parity", n_dims=3, k=2).sample(
        jax.random.key(0), 1, 4)
    with self.assertRaisesRegex(ValueError, r"k=4 exceeds the input width d=3"):
      parity.ParityBayes(k=4)(prompt)

  @parameterized.parameters(
      (dict(k=0), r"ParityBayes.k must be an int >= 1, got 0"),
      (dict(rule="vote"), r"rule='vote' is unknown"))
  def test_rejects_bad_fields(self, kwargs, message):
    with self.assertRaisesRegex(ValueError, message):
      parity.ParityBayes(**kwargs)


if __name__ == "__main__":
  absltest.main()
