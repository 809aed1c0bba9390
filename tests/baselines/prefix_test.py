"""Tests for ssm_icl/baselines/prefix.py."""

from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from ssm_icl import tasks
from ssm_icl.baselines import prefix


def _lr_prompt(b=2, n=5, d=3, seed=0):
  task = tasks.get_task("linear_regression", n_dims=d)
  return task.sample(jax.random.key(seed), b, n)


class PrefixViewTest(absltest.TestCase):

  def test_prefix_is_the_earlier_genuine_examples(self):
    prompt = _lr_prompt(b=2, n=5)
    example_mask = np.ones((2, 5), np.float32)
    example_mask[1, 2] = 0.0  # An outlier in prompt 1.
    prompt = prompt.replace(example_mask=jnp.asarray(example_mask))
    view = prefix.prefix_view(prompt, name="t")
    expected = np.zeros((2, 5, 5), np.float32)
    for b in range(2):
      for j in range(5):
        expected[b, j, :j] = example_mask[b, :j]
    np.testing.assert_array_equal(view.prefix_mask, expected)
    np.testing.assert_array_equal(view.queries, prompt.xs)
    np.testing.assert_array_equal(view.slot_mask, np.ones((2, 5)))

  def test_queries_follow_example_index(self):
    prompt = _lr_prompt(n=5)
    index = jnp.array([4, 1], jnp.int32)
    prompt = prompt.replace(
        example_index=index, targets=prompt.targets[:, :2],
        metric_mask=prompt.metric_mask[:, :2],
        predict_positions=2 * index)
    view = prefix.prefix_view(prompt, name="t")
    np.testing.assert_array_equal(view.queries,
                                  np.asarray(prompt.xs)[:, [4, 1]])
    np.testing.assert_array_equal(view.prefix_mask[0, 1], [1, 0, 0, 0, 0])
    np.testing.assert_array_equal(view.prefix_mask[0, 0], [1, 1, 1, 1, 0])

  def test_missing_example_mask_means_all_genuine(self):
    prompt = _lr_prompt(n=4).replace(example_mask=None)
    view = prefix.prefix_view(prompt, name="t")
    np.testing.assert_array_equal(view.prefix_mask[0, 3], [1, 1, 1, 0])

  def test_rejects_missing_xs(self):
    with self.assertRaisesRegex(ValueError, r"'knn' needs Prompt.xs"):
      prefix.prefix_view(_lr_prompt().replace(xs=None), name="knn")

  def test_rejects_missing_ys(self):
    with self.assertRaisesRegex(ValueError, r"needs Prompt.ys"):
      prefix.prefix_view(_lr_prompt().replace(ys=None), name="knn")

  def test_rejects_mismatched_shapes(self):
    prompt = _lr_prompt(n=5)
    with self.assertRaisesRegex(ValueError,
                                r"xs \(2, 5, 3\) and ys \(2, 4, 1\)"):
      prefix.prefix_view(prompt.replace(ys=prompt.ys[:, :4]), name="t")

  def test_rejects_bad_example_mask_shape(self):
    prompt = _lr_prompt(n=5)
    with self.assertRaisesRegex(ValueError, r"example_mask has shape \(2, 4\)"):
      prefix.prefix_view(
          prompt.replace(example_mask=prompt.example_mask[:, :4]), name="t")

  def test_rejects_example_index_outside_xs(self):
    prompt = _lr_prompt(n=5)
    bad = prompt.replace(example_index=prompt.example_index + 1)
    with self.assertRaisesRegex(ValueError, r"example_index must lie in "
                                r"\[0, 5\).*spans \[1, 5\]"):
      prefix.prefix_view(bad, name="t")

  def test_rejects_targets_that_are_not_the_labels(self):
    prompt = _lr_prompt()
    bad = prompt.replace(targets=jnp.zeros((2, 5, 2)))
    with self.assertRaisesRegex(ValueError, r"d_y=1 .* d_out=2"):
      prefix.prefix_view(bad, name="t")


class ToTargetsTest(absltest.TestCase):

  def test_identity_when_widths_match(self):
    prompt = _lr_prompt()
    preds = jnp.ones((2, 5, 1))
    np.testing.assert_array_equal(prefix.to_targets(preds, prompt), preds)

  def test_places_labels_in_metric_coords(self):
    task = tasks.get_task("cot_io", n_dims=3, hidden=2)
    prompt = task.sample(jax.random.key(0), 2, 3)
    prefix.prefix_view(prompt, name="t")  # Accepted: y is a metric coord.
    preds = jnp.arange(12, dtype=jnp.float32).reshape(2, 6, 1)
    out = prefix.to_targets(preds, prompt)
    self.assertEqual(out.shape, (2, 6, 3))
    np.testing.assert_array_equal(out[..., 2], preds[..., 0])
    np.testing.assert_array_equal(out[..., :2], 0.0)


class MapSlotsTest(parameterized.TestCase):

  @parameterized.parameters(1 << 24, 1)  # One chunk; one slot per chunk.
  def test_matches_direct_vectorised_computation(self, chunk_elements):
    self.enter_context(
        mock.patch.object(prefix, "_CHUNK_ELEMENTS", chunk_elements))
    prompt = _lr_prompt(b=3, n=6)
    view = prefix.prefix_view(prompt, name="t")

    def fn(query, mask):  # Masked sum of labels, times the query's norm.
      return (jnp.einsum("bn,bny->by", mask, view.ys)
              * jnp.linalg.norm(query, axis=-1, keepdims=True))

    got = jax.jit(lambda v: prefix.map_slots(fn, v))(view)
    expected = (np.einsum("bpn,bny->bpy", view.prefix_mask, view.ys)
                * np.linalg.norm(view.queries, axis=-1, keepdims=True))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


if __name__ == "__main__":
  absltest.main()
