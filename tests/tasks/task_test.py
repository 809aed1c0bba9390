"""Tests for ssm_icl.tasks.task (the Task base class and its helpers)."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from ssm_icl import tasks
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


if __name__ == "__main__":
  absltest.main()
