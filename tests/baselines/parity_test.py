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

  @parameterized.parameters((6, 2, 38 / 64), (4, 1, 11 / 16), (3, 3, 1.0))
  def test_no_context_accuracy(self, d, k, expected):
    # d=6, k=2 by hand: m minus signs leave C(m,2) + C(6-m,2) of 15 pairs
    # with parity +1, so the vote is right w.p. 1, 2/3, 8/15, 3/5 for m = 0,
    # 1, 2, 3 (and symmetrically): 38/64. k = 1: the majority sign of the
    # query is right w.p. 1, 3/4, 1/2 for m = 0, 1, 2: 11/16. k = d: known.
    self.assertAlmostEqual(parity.no_context_accuracy(d, k), expected)

  def test_without_examples_matches_the_exact_accuracy(self):
    task = tasks.get_task("sparse_parity", n_dims=6, k=2)
    prompt = task.sample(jax.random.key(2), 512, 8)
    acc = np.asarray(base.pointwise_metric(
        parity.ParityBayes(k=2, use_examples=False)(prompt), prompt))
    # Blind to the examples: the same accuracy at every slot.
    np.testing.assert_allclose(acc.mean(), 38 / 64, atol=0.02)
    got = parity.ParityBayes(k=2, use_examples=False)(prompt)[..., 0]
    signs = np.sign(np.asarray(prompt.xs))
    votes = sum(signs[..., i] * signs[..., j]
                for i, j in itertools.combinations(range(6), 2))
    decided = votes != 0
    np.testing.assert_array_equal(np.asarray(got)[decided],
                                  np.sign(votes)[decided])

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
