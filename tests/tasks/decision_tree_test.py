"""Tests for ssm_icl.tasks.decision_tree."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np

from ssm_icl import tasks
from ssm_icl.tasks import decision_tree
from tests.tasks import prompt_checks


def _numpy_tree(x, coords, values, depth):
  """Reference traversal, one input at a time."""
  node = 0
  for _ in range(depth):
    node = 2 * node + (2 if x[coords[node]] > 0 else 1)
  return values[node]


class DecisionTreeTest(parameterized.TestCase):

  def test_sharding_invariance(self):
    prompt_checks.assert_sharding_invariant(
        self, tasks.DecisionTree(n_dims=6), n_dims_truncated=4)

  @parameterized.parameters((None,), (3,))
  def test_labels_match_numpy_traversal(self, trunc):
    task = tasks.DecisionTree(n_dims=6, depth=3)
    key = jax.random.key(5)
    p = jax.device_get(task.sample(key, 8, 12, trunc))
    # `sample` draws the trees from the first half of split(key).
    coords, values = jax.device_get(
        task.draw_trees(jax.random.split(key)[0], 8))
    self.assertEqual(coords.shape, (8, 15))
    self.assertTrue(np.all((coords >= 0) & (coords < 6)))
    want = np.array([[_numpy_tree(x, c, v, 3) for x in xs]
                     for xs, c, v in zip(p.xs, coords, values)])
    np.testing.assert_array_equal(p.ys[..., 0], want)
    np.testing.assert_array_equal(p.targets[..., 0], want)
    np.testing.assert_array_equal(p.tokens[:, 1::2, 0], want)
    if trunc is not None:
      np.testing.assert_array_equal(p.xs[..., trunc:], 0.0)
    self.assertEqual(p.normalizer, 1.0)

  def test_traverse_on_constructed_tree(self):
    # Depth 2; root splits on coordinate 1, its children on 0 and 2.
    coords = np.array([[1, 0, 2, 0, 0, 0, 0]], np.int32)
    values = np.array([[0, 0, 0, 10.0, 11.0, 12.0, 13.0]], np.float32)
    x = np.array([[[-1, -1, 0], [1, -1, 0], [0, 1, -1], [0, 1, 2]]],
                 np.float32)
    got = decision_tree.traverse(x, coords, values, depth=2)
    np.testing.assert_array_equal(got, [[10.0, 11.0, 12.0, 13.0]])

  def test_leaf_value_statistics(self):
    p = tasks.DecisionTree().sample(jax.random.key(0), 64, 32)
    # Labels are leaf values ~ N(0, 1); the leaves reached vary per prompt.
    np.testing.assert_allclose(np.mean(np.square(p.ys)), 1.0, atol=0.25)
    distinct = [len(np.unique(y)) for y in np.asarray(p.ys[..., 0])]
    self.assertGreater(np.mean(distinct), 4)


if __name__ == "__main__":
  absltest.main()
