"""Tests for ssm_icl/train/step.py on the tiny Mamba over 8 CPU devices."""

import functools
from unittest import mock

from absl.testing import absltest
import chex
from flax import linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from configs import linear_regression
from ssm_icl import models
from ssm_icl.parallel import mesh as mesh_lib
from ssm_icl.tasks import base
from ssm_icl.train import loop
from ssm_icl.train import optim
from ssm_icl.train import state as state_lib
from ssm_icl.train import step as step_lib

_BATCH, _POINTS, _SEED = 8, 6, 0


class StepTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    config = linear_regression.get_config("mamba,tiny")
    cls.task, _, model_cfg, _ = loop.build(config)
    cls.model = models.build_model(model_cfg)
    cls.mesh = mesh_lib.make_mesh((-1, 1))
    cls.rules = mesh_lib.axis_rules("dp", cls.mesh)
    cls.schedule = optim.learning_rate_schedule(config.train)
    with jax.set_mesh(cls.mesh), nn.logical_axis_rules(cls.rules):
      cls.sharded = state_lib.abstract_state(
          cls.model, optim.make_optimizer(config.train),
          (1, 12, cls.task.d_in), _SEED, cls.mesh, cls.rules)
      cls.state = state_lib.init_state(cls.sharded)
    cls.traces = []
    cls.sample = staticmethod(step_lib.jit_sampler(
        step_lib.sample_train_prompt, cls.mesh, task=cls.task,
        batch_size=_BATCH, n_points=_POINTS, pad_points=_POINTS, seed=_SEED))
    cls.train = staticmethod(step_lib.jit_train_step(
        cls.sharded.shardings,
        step_lib.prompt_shardings(cls.task, cls.mesh, _BATCH, _POINTS),
        cls.mesh, seed=_SEED, schedule=cls.schedule,
        on_trace=lambda: cls.traces.append(1)))

  def _scalar(self, value):
    return jax.device_put(np.int32(value), mesh_lib.replicated(self.mesh))

  def _run(self, state, n_dims, nan_step=-1):
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
      prompt = self.sample(state.step, self._scalar(n_dims))
      return self.train(state, prompt, self._scalar(nan_step))

  def _copy(self, state):
    return jax.tree.map(jnp.copy, state)  # the step donates its input

  def test_loss_is_the_masked_loss_of_the_step_batch(self):
    state = self._copy(self.state)
    _, metrics = self._run(state, 3)
    # Recompute outside the step: the batch of step 0 with n_dims = 3.
    key = jax.random.fold_in(state_lib.train_key(_SEED, 0), 0)
    prompt = self.task.sample(key, _BATCH, _POINTS, 3)
    self.assertTrue(np.all(np.asarray(prompt.tokens)[:, 0::2, 3:] == 0))
    outputs = self.model.apply({"params": self.state.params}, prompt.tokens)
    want = base.masked_loss(base.gather_predictions(outputs, prompt), prompt)
    np.testing.assert_allclose(metrics["train/loss"], want, rtol=1e-5)
    np.testing.assert_allclose(metrics["train/lr"], 1e-3, rtol=1e-6)
    np.testing.assert_allclose(
        metrics["train/param_norm"],
        np.sqrt(sum(np.sum(np.square(x))
                    for x in jax.tree.leaves(self.state.params))), rtol=1e-5)

  def test_n_dims_is_traced_and_state_advances(self):
    state = self._copy(self.state)
    before = len(self.traces)
    for n_dims in (1, 2, 4):
      state, metrics = self._run(state, n_dims)
      self.assertTrue(np.isfinite(metrics["train/loss"]))
    self.assertLessEqual(len(self.traces) - before, 1)
    self.assertEqual(int(state.step), 3)
    self.assertEqual(state.params["read_in"]["kernel"].sharding,
                     self.sharded.shardings.params["read_in"]["kernel"])

  def test_nan_step_poisons_only_that_step(self):
    state = self._copy(self.state)
    state, first = self._run(state, 4, nan_step=2)
    self.assertTrue(np.isfinite(first["train/loss"]))
    state, second = self._run(state, 4, nan_step=2)
    self.assertTrue(np.isnan(second["train/loss"]))
    self.assertTrue(np.isnan(second["train/grad_norm"]))

  def test_same_step_same_result(self):
    _, a = self._run(self._copy(self.state), 4)
    _, b = self._run(self._copy(self.state), 4)
    chex.assert_trees_all_equal(a, b)

  def test_cpu_sampler_compiles_at_the_cheap_level_with_the_same_samples(self):
    # SAMPLER_CPU_OPTIONS reach the jitted sampler, and its batch equals
    # the one of a default-compiled sampler bit for bit (linear regression).
    with mock.patch.object(jax, "jit", wraps=jax.jit) as jit:
      step_lib.jit_sampler(
          step_lib.sample_train_prompt, self.mesh, task=self.task,
          batch_size=_BATCH, n_points=_POINTS, pad_points=_POINTS, seed=_SEED)
    self.assertEqual(jit.call_args.kwargs["compiler_options"],
                     step_lib.SAMPLER_CPU_OPTIONS)
    default = jax.jit(functools.partial(
        step_lib.sample_train_prompt, mesh=self.mesh, task=self.task,
        batch_size=_BATCH, n_points=_POINTS, pad_points=_POINTS, seed=_SEED))
    with jax.set_mesh(self.mesh):
      args = (self._scalar(3), self._scalar(4))
      chex.assert_trees_all_equal(self.sample(*args), default(*args))

  def test_eval_step_sums(self):
    pad = _POINTS + 3
    sample = step_lib.jit_sampler(
        step_lib.sample_eval_prompt, self.mesh, task=self.task,
        batch_size=_BATCH, n_points=_POINTS, pad_points=pad, seed=_SEED)
    evaluate = step_lib.jit_eval_step(
        self.sharded.shardings.params,
        step_lib.prompt_shardings(self.task, self.mesh, _BATCH, pad),
        self.mesh, self.model.apply)
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
      padded = sample(self._scalar(1))
      self.assertEqual(padded.tokens.shape[1], self.task.seq_len(pad))
      got = evaluate(self.state.params, padded,
                     self._scalar(self.task.num_slots(_POINTS) - 1))
    prompt = self.task.sample(state_lib.eval_key(_SEED, 1), _BATCH, _POINTS)
    outputs = self.model.apply({"params": self.state.params}, prompt.tokens)
    preds = base.gather_predictions(outputs, prompt)
    metric = np.asarray(base.pointwise_metric(preds, prompt))
    mask = np.asarray(prompt.metric_mask)
    np.testing.assert_allclose(got["metric_sum"], np.sum(metric * mask),
                               rtol=1e-5)
    np.testing.assert_allclose(got["metric_count"], mask.sum())
    np.testing.assert_allclose(got["last_sum"], np.sum(metric[:, -1]),
                               rtol=1e-5)
    np.testing.assert_allclose(got["last_count"], _BATCH)
    np.testing.assert_allclose(
        got["loss_sum"], base.masked_loss(preds, prompt) * _BATCH, rtol=1e-5)

  def test_shard_prompt_splits_the_batch(self):
    mesh = mesh_lib.make_mesh((2, 4))

    @jax.jit
    def sample(key):
      return step_lib.shard_prompt(
          self.task.sample(key, _BATCH, _POINTS), mesh).tokens

    with jax.set_mesh(mesh):
      tokens = sample(jax.random.key(0))
    self.assertTrue(tokens.sharding.is_equivalent_to(
        mesh_lib.batch_sharding(mesh), tokens.ndim))
    # The same key gives the same batch as unsharded sampling. Not bit for
    # bit: the labels are computed (y = <w, x>), and a sharded matmul may sum
    # in another order (jax 0.12 differs in the last bit); another key would
    # differ by O(1).
    np.testing.assert_allclose(
        tokens, self.task.sample(jax.random.key(0), _BATCH, _POINTS).tokens,
        rtol=1e-5, atol=1e-6)


if __name__ == "__main__":
  absltest.main()
