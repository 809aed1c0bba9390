"""Tests for ssm_icl.tasks.registry and the properties every task shares."""

import dataclasses

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp

from ssm_icl import tasks
from ssm_icl.tasks import base
from ssm_icl.tasks import task as task_lib

_B, _N = 8, 5

# Paper defaults (docs/PAPER.md §3.1-§3.9): d_in, d_out, normalizer,
# tokens per example, default n_points.
_EXPECTED = {
    "linear_regression": (20, 1, 20.0, 2, 41),
    "sparse_linear_regression": (20, 1, 3.0, 2, 41),
    "relu_2nn_regression": (20, 1, 20.0, 2, 101),
    "decision_tree": (20, 1, 1.0, 2, 101),
    "ortho_outlier_regression": (20, 1, 20.0, 2, 101),
    "many_outlier_regression": (20, 1, 20.0, 2, 512),
    "sparse_parity": (10, 1, 1.0, 2, 140),
    "cot_io": (18, 5, 10.0, 3, 101),
    "vector_mqar": (20, 20, 20.0, 2, 64),
}


class RegistryTest(parameterized.TestCase):

  def test_registry_has_the_nine_families(self):
    self.assertCountEqual(tasks.TASKS, _EXPECTED)
    for name, cls in tasks.TASKS.items():
      self.assertEqual(cls.name, name)

  def test_unknown_name_lists_valid_names(self):
    with self.assertRaisesRegex(ValueError,
                                "Unknown task 'lr'.*linear_regression"):
      tasks.get_task("lr")

  def test_unknown_kwarg_is_named(self):
    with self.assertRaisesRegex(ValueError, r"\['sparsity'\].*'k'"):
      tasks.get_task("sparse_linear_regression", sparsity=3)

  def test_kwargs_override_defaults(self):
    task = tasks.get_task("sparse_parity", n_dims=6, k=3)
    self.assertEqual((task.n_dims, task.k), (6, 3))

  @parameterized.parameters(
      ("sparse_linear_regression", dict(k=21), "k=21 must be <= n_dims=20"),
      ("sparse_parity", dict(k=11), "k=11 must be <= n_dims=10"),
      ("many_outlier_regression", dict(prob=-0.1), r"prob=-0.1 .*\[0, 1\]"),
      ("ortho_outlier_regression", dict(prob=1.5), r"prob=1.5 .*\[0, 1\]"),
      ("linear_regression", dict(n_dims=0), "n_dims=0 must be a positive"),
      ("relu_2nn_regression", dict(hidden=-3), "hidden=-3 must be a pos"),
      ("decision_tree", dict(depth=0), "depth=0 must be a positive"),
      ("cot_io", dict(hidden=0), "hidden=0 must be a positive"),
      ("vector_mqar", dict(n_pairs=0), "n_pairs=0 must be a positive"),
      ("vector_mqar", dict(query_noise=-1.0), "query_noise=-1.0 must be"),
      ("vector_mqar", dict(query_position=-2), "query_position=-2 must be"),
      ("linear_regression", dict(noise_std=-1.0), "noise_std=-1.0 must be"),
      ("linear_regression", dict(x_scale=0.0), "x_scale=0.0 must be > 0"),
      ("linear_regression", dict(covariance="diag"), "covariance='diag'"),
      ("linear_regression", dict(query_mode="x"), "query_mode='x' is unkn"),
      ("many_outlier_regression", dict(outlier_layout="grid"),
       "outlier_layout='grid'"),
  )
  def test_bad_field_values(self, name, kwargs, message):
    with self.assertRaisesRegex(ValueError, message):
      tasks.get_task(name, **kwargs)

  @parameterized.parameters(*_EXPECTED)
  def test_static_properties(self, name):
    task = tasks.get_task(name)
    d_in, d_out, normalizer, per_example, n_default = _EXPECTED[name]
    self.assertEqual((task.d_in, task.d_out), (d_in, d_out))
    self.assertEqual(task.normalizer, normalizer)
    self.assertEqual(task.default_n_points, n_default)
    extra = 1 if name == "vector_mqar" else 0
    self.assertEqual(task.seq_len(7), per_example * 7 + extra)
    # Frozen and hashable (a static jit argument).
    self.assertEqual(hash(task), hash(tasks.get_task(name)))
    with self.assertRaises(dataclasses.FrozenInstanceError):
      task.n_dims = 3

  @parameterized.parameters(*_EXPECTED)
  def test_check_fits(self, name):
    task = tasks.get_task(name)
    task.check_fits(10, task.seq_len(10))
    with self.assertRaisesRegex(
        ValueError, f"n_points=10 needs {task.seq_len(10)} tokens.*"
        f"n_positions={task.seq_len(10) - 1}"):
      task.check_fits(10, task.seq_len(10) - 1)

  @parameterized.parameters(*_EXPECTED)
  def test_shapes_and_dtypes(self, name):
    # Abstract evaluation: no compilation. Values (and the sharding
    # invariance) are tested in each family's test file.
    task = tasks.get_task(name)
    d = task.n_dims
    prompt = jax.eval_shape(
        lambda key, trunc: task.sample(key, _B, _N, trunc),
        jax.random.key(0), jnp.int32(d - 1))
    n_slots = {"cot_io": 2 * _N, "vector_mqar": 1}.get(name, _N)
    n_rows = _N + 1 if name == "vector_mqar" else _N
    length = task.seq_len(_N)
    chex.assert_shape(prompt.tokens, (_B, length, task.d_in))
    chex.assert_shape(prompt.predict_positions, (n_slots,))
    chex.assert_shape(prompt.example_index, (n_slots,))
    chex.assert_shape([prompt.targets, prompt.loss_mask],
                      (_B, n_slots, task.d_out))
    chex.assert_shape(prompt.metric_mask, (_B, n_slots))
    chex.assert_shape(prompt.xs, (_B, n_rows, d))
    chex.assert_shape(prompt.example_mask, (_B, n_rows))
    self.assertEqual(prompt.ys.shape[:2], (_B, n_rows))
    for field in task_lib.BATCHED_FIELDS:
      self.assertEqual(getattr(prompt, field).dtype, jnp.float32, field)
    self.assertEqual(prompt.predict_positions.dtype, jnp.int32)
    self.assertEqual(prompt.example_index.dtype, jnp.int32)
    self.assertEqual(prompt.normalizer, task.normalizer)
    self.assertIn(prompt.loss, (base.LOSS_MSE, base.LOSS_LOGISTIC))


if __name__ == "__main__":
  absltest.main()
