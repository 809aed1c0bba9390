"""Tests for ssm_icl.tasks.task (the Task base class and its helpers)."""

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np

from ssm_icl import tasks
from ssm_icl.tasks import base
from ssm_icl.tasks import task as task_lib


class ValidationTest(parameterized.TestCase):

  @parameterized.parameters(0, -2, 1.5, True, "3")
  def test_positive_int(self, value):
    with self.assertRaisesRegex(ValueError, f"size={value!r} must be a pos"):
      task_lib.check_positive_int("size", value)

  def test_valid_values_pass(self):
    task_lib.check_positive_int("size", np.int64(3))
    task_lib.check_probability("p", 0.0)
    task_lib.check_probability("p", 1)
    task_lib.check_non_negative("s", 0.0)
    task_lib.check_truncation(None, 5)
    task_lib.check_truncation(np.int32(5), 5)
    task_lib.check_truncation(jnp.int32(1), 5)

  @parameterized.parameters(-0.1, 1.01, float("nan"))
  def test_probability(self, value):
    with self.assertRaisesRegex(ValueError, r"must be a probability in \[0"):
      task_lib.check_probability("p", value)

  @parameterized.parameters((0, "must be in"), (6, "must be in"),
                            (jnp.ones(2, jnp.int32), "scalar int"),
                            (2.0, "scalar int"))
  def test_truncation(self, value, message):
    with self.assertRaisesRegex(ValueError, f"n_dims_truncated=.*{message}"):
      task_lib.check_truncation(value, 5)

  def test_traced_truncation_is_not_checked(self):
    # Under jit the value is unknown; an out-of-range one zeroes nothing.
    out = jax.jit(lambda t: task_lib.dims_mask(4, t))(jnp.int32(9))
    np.testing.assert_array_equal(out, 1.0)


class HelpersTest(absltest.TestCase):

  def test_interleave_and_pad(self):
    x = jnp.arange(12.0).reshape(1, 3, 4)
    y = task_lib.pad_scalar(jnp.array([[10.0, 20.0, 30.0]]), 4)
    np.testing.assert_array_equal(y[0, :, 1:], 0.0)
    tokens = task_lib.interleave(x, y)
    self.assertEqual(tokens.shape, (1, 6, 4))
    np.testing.assert_array_equal(tokens[0, 0::2], x[0])
    np.testing.assert_array_equal(tokens[0, 1::2, 0], [10.0, 20.0, 30.0])

  def test_dims_mask(self):
    np.testing.assert_array_equal(task_lib.dims_mask(4, 2), [1, 1, 0, 0])
    np.testing.assert_array_equal(task_lib.dims_mask(3, None), [1, 1, 1])

  def test_random_subset_mask_is_uniform_over_valid_coords(self):
    mask = np.asarray(task_lib.random_subset_mask(
        jax.random.key(0), (4000,), 8, 2, jnp.int32(5)))
    np.testing.assert_array_equal(mask.sum(-1), 2.0)
    np.testing.assert_array_equal(mask[:, 5:], 0.0)
    # Each of the 5 valid coordinates is in the subset with probability 2/5
    # (4000 draws: standard error 0.008).
    np.testing.assert_allclose(mask[:, :5].mean(0), 0.4, atol=0.04)
    fewer = task_lib.random_subset_mask(jax.random.key(1), (50,), 8, 3, 2)
    np.testing.assert_array_equal(np.asarray(fewer).sum(-1), 2.0)

  def test_prompt_shardings_and_cached_sampler(self):
    task = tasks.LinearRegression(n_dims=3)
    mesh = jax.make_mesh((8,), ("data",),
                         axis_types=(jax.sharding.AxisType.Auto,))
    prompt = task.sample(jax.random.key(0), 8, 2)
    shardings = task_lib.prompt_shardings(prompt.replace(xs=None), mesh)
    self.assertIsNone(shardings.xs)
    self.assertEqual(shardings.tokens.spec, jax.sharding.PartitionSpec("data"))
    self.assertEqual(shardings.predict_positions.spec,
                     jax.sharding.PartitionSpec())
    self.assertIs(task_lib.jitted_sampler(task, 8, 2),
                  task_lib.jitted_sampler(tasks.LinearRegression(n_dims=3),
                                          8, 2))

  def test_task_is_abstract(self):
    with self.assertRaises(TypeError):
      task_lib.Task()  # pytype: disable=not-instantiable


# One small instance of every registered task, plus the single-query modes.
_PADDED_CASES = [(name, {"n_dims": 3}) for name in sorted(tasks.TASKS)] + [
    ("linear_regression", {"n_dims": 3, "query_mode": "overlapping"}),
    ("vector_mqar", {"n_dims": 3, "query_position": 1}),
    ("many_outlier_regression", {"n_dims": 3, "outlier_layout": "fixed"}),
]


class SamplePaddedTest(parameterized.TestCase):
  """`sample_padded` = `sample`, then zero padding with zero masks."""

  @parameterized.parameters(*_PADDED_CASES)
  def test_real_part_is_the_exact_prompt(self, name, kwargs):
    task = tasks.get_task(name, **kwargs)
    key, n, pad = jax.random.key(4), 3, 7
    exact = jax.jit(lambda k, t: task.sample(k, 2, n, t))(key, jnp.int32(2))
    padded = jax.jit(lambda k, t: task.sample_padded(k, 2, n, pad, t))(
        key, jnp.int32(2))
    like = task.sample(key, 2, pad, jnp.int32(2))
    self.assertEqual(jax.tree.structure(padded), jax.tree.structure(like))
    for field in ("tokens", "predict_positions", "targets", "loss_mask",
                  "metric_mask", "example_index", "xs", "ys",
                  "example_mask"):
      got, want = getattr(padded, field), getattr(exact, field)
      self.assertEqual(got.shape, getattr(like, field).shape, field)
      real = tuple(slice(0, d) for d in want.shape)
      np.testing.assert_array_equal(got[real], want, err_msg=field)
      rest = np.ones(got.shape, bool)
      rest[real] = False
      np.testing.assert_array_equal(np.asarray(got)[rest], 0, err_msg=field)
    self.assertEqual(task.num_slots(n), exact.metric_mask.shape[1])
    # Masked loss and metric sums ignore the padding.
    preds = jax.random.normal(jax.random.key(5), padded.targets.shape)
    p = exact.targets.shape[1]
    np.testing.assert_allclose(
        base.masked_loss(preds, padded),
        base.masked_loss(preds[:, :p], exact), rtol=1e-6)
    np.testing.assert_allclose(
        np.sum(base.pointwise_metric(preds, padded) * padded.metric_mask),
        np.sum(base.pointwise_metric(preds[:, :p], exact) * exact.metric_mask),
        rtol=1e-6)

  def test_no_padding_and_bad_bucket(self):
    task = tasks.LinearRegression(n_dims=3)
    key = jax.random.key(0)
    chex.assert_trees_all_equal(task.sample_padded(key, 2, 4, 4),
                                task.sample(key, 2, 4))
    with self.assertRaisesRegex(ValueError, r"pad_points=3 must be >= "
                                r"n_points=4"):
      task.sample_padded(key, 2, 4, 3)
    with self.assertRaisesRegex(ValueError, r"pad_points=0 must be a pos"):
      task.sample_padded(key, 2, 4, 0)

  def test_pad_prompt_rejects_a_smaller_target(self):
    task = tasks.LinearRegression(n_dims=3)
    big = task.sample(jax.random.key(0), 2, 4)
    small = task.sample(jax.random.key(0), 2, 3)
    with self.assertRaisesRegex(ValueError, r"Cannot pad Prompt.tokens of "
                                r"shape \(2, 8, 3\) to \(2, 6, 3\)"):
      base.pad_prompt(big, small)
    with self.assertRaisesRegex(ValueError, r"Cannot pad Prompt.xs of shape "
                                r"None"):
      base.pad_prompt(small.replace(xs=None), big)


if __name__ == "__main__":
  absltest.main()
