"""Shared assertions for the task tests (not a test module itself)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np

from ssm_icl.tasks import task as task_lib


def _mesh():
  return jax.make_mesh((8,), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))


def assert_sharding_invariant(test, task, batch_size=8, n_points=5,
                              n_dims_truncated=None):
  """Same key, same prompt: jitted on one device and split over 8.

  Also checks that sampling is repeatable and that another key gives another
  prompt.

  Args:
    test: the running `absltest.TestCase`.
    task: the task under test.
    batch_size: prompts per batch (a multiple of 8).
    n_points: examples per prompt.
    n_dims_truncated: None (full d) or an int, passed as a traced int32.

  Returns:
    The single-device prompt, on the host.
  """
  trunc = task.n_dims if n_dims_truncated is None else n_dims_truncated
  trunc = jnp.int32(trunc)
  key = jax.random.key(11)
  single_fn = task_lib.jitted_sampler(task, batch_size, n_points)
  single = single_fn(key, n_dims_truncated=trunc)
  sharded = task_lib.jitted_sampler(task, batch_size, n_points, _mesh())(
      key, n_dims_truncated=trunc)
  test.assertEqual(sharded.tokens.sharding.spec,
                   jax.sharding.PartitionSpec("data"))
  test.assertLen(sharded.tokens.sharding.device_set, 8)
  test.assertLen(single.tokens.sharding.device_set, 1)
  chex.assert_trees_all_close(single, sharded, rtol=1e-6, atol=1e-6)
  chex.assert_trees_all_equal(single, single_fn(key, n_dims_truncated=trunc))
  other = single_fn(jax.random.key(12), n_dims_truncated=trunc)
  test.assertFalse(np.allclose(single.tokens, other.tokens))
  return jax.device_get(single)
