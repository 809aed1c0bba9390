"""Tests for ssm_icl/train/buckets.py: bucket choice, padding, program release.

The padded program must train exactly like the unpadded one: for every kind
of block (attention and MLP with learned positions, Mamba, S4D, S4-Mamba) the
loss and gradients of a prompt padded to a longer bucket equal the exact
prompt's to 1e-6 relative in fp32, in training mode (dropout on: S4-Mamba's
dropout mask is tied over time, so padding does not change it). The hybrid
families only stack these causal blocks, so they are not run again here.
Every task's padded prompt fields are checked in tests/tasks/task_test.py;
a run of the many-outlier curriculum in tests/train/loop_test.py.
"""

import gc
import importlib
import itertools

from absl.testing import absltest
from absl.testing import parameterized
from flax import linen as nn
import jax
import numpy as np
import pytest

from configs import linear_regression
from configs import many_outlier_regression
from ssm_icl import models
from ssm_icl.models import families
from ssm_icl import tasks
from ssm_icl.tasks import base
from ssm_icl.train import buckets
from ssm_icl.train import loop

# Every config file that trains one task (configs/<task>.py).
PAPER_CONFIGS = ("linear_regression", "sparse_linear_regression",
                 "relu_2nn_regression", "decision_tree",
                 "ortho_outlier_regression", "many_outlier_regression",
                 "sparse_parity", "cot_io", "vector_mqar")
RTOL = 1e-6


def _padding(values, chosen):
  return sum(buckets.bucket_of(chosen, v) - v for v in values)


class ChooseBucketsTest(parameterized.TestCase):

  def test_optimal_against_brute_force(self):
    rng = np.random.default_rng(0)
    for _ in range(60):
      values = sorted(rng.choice(np.arange(1, 40), rng.integers(1, 8),
                                 replace=False).tolist())
      k = int(rng.integers(1, 5))
      got = buckets.choose_buckets(values, k)
      self.assertLessEqual(len(got), k)
      self.assertEqual(got[-1], values[-1])
      self.assertTrue(set(got) <= set(values))
      best = min(
          _padding(values, tuple(sorted(set(c) | {values[-1]})))
          for r in range(min(k, len(values)))
          for c in itertools.combinations(values[:-1], r))
      self.assertEqual(_padding(values, got), best, (values, k, got))

  def test_few_lengths_and_zero_keep_every_length(self):
    self.assertEqual(buckets.choose_buckets([7, 3, 5], 8), (3, 5, 7))
    self.assertEqual(buckets.choose_buckets(range(1, 30), 0),
                     tuple(range(1, 30)))
    self.assertEqual(buckets.choose_buckets([5, 100, 101, 102], 2),
                     (5, 102))

  @parameterized.parameters(-1, 1.5, True, "8")
  def test_bad_max_buckets(self, value):
    with self.assertRaisesRegex(ValueError,
                                r"train.length_buckets=.* must be an int"):
      buckets.choose_buckets([1, 2], value)

  def test_bucket_of(self):
    self.assertEqual(buckets.bucket_of((4, 9), 1), 4)
    self.assertEqual(buckets.bucket_of((4, 9), 4), 4)
    self.assertEqual(buckets.bucket_of((4, 9), 5), 9)
    with self.assertRaisesRegex(ValueError, r"n_points=10 is longer than the "
                                r"largest length bucket 9"):
      buckets.bucket_of((4, 9), 10)

  def test_many_outlier_paper_curriculum(self):
    config = many_outlier_regression.get_config("mamba")
    curriculum = tasks.Curriculum.from_config(config.task.curriculum)
    self.assertLen(curriculum.distinct_points(), 251)
    chosen = buckets.curriculum_buckets(curriculum,
                                        config.train.length_buckets)
    self.assertEqual(chosen, (72, 134, 196, 258, 320, 384, 448, 512))
    # Every step of the curriculum maps into one of them.
    used = {buckets.bucket_of(chosen, curriculum.at(s)[1])
            for s in range(0, curriculum.final_step + 1, 100)}
    self.assertEqual(used, set(chosen))

  @parameterized.parameters(*PAPER_CONFIGS)
  def test_every_paper_config_compiles_at_most_ten_programs(self, name):
    config = importlib.import_module(f"configs.{name}").get_config("mamba")
    curriculum = tasks.Curriculum.from_config(config.task.curriculum)
    chosen = buckets.curriculum_buckets(curriculum,
                                        config.train.length_buckets)
    self.assertLessEqual(len(chosen), 10)
    self.assertEqual(chosen[-1], curriculum.points_end)


class ProgramCacheTest(absltest.TestCase):

  def test_shorter_programs_are_released_and_freed(self):
    client = jax.devices()[0].client
    cache = buckets.ProgramCache(
        lambda n: jax.jit(lambda x: x * n + 1.0))
    cache.get(3)(np.ones(3, np.float32))
    gc.collect()
    live = len(client.live_executables())
    self.assertIs(cache.get(3), cache.get(3))
    cache.get(5)(np.ones(5, np.float32))
    self.assertNotIn(3, cache)
    self.assertLen(cache, 1)
    self.assertEqual(cache.released, [3])
    self.assertEqual(cache.built, {3: 1, 5: 1})
    gc.collect()
    # The program of 5 replaced that of 3: no more executables than before.
    self.assertLessEqual(len(client.live_executables()), live)


def _relative(got, want):
  got, want = np.ravel(got), np.ravel(want)
  return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30))


# One family per kind of block: padding only appends positions after the
# prompt, and a stack of causal blocks is causal, so Hybrid and MambaFormer
# (attention, Mamba and positions, all covered here) would add compile time
# and no code path.
BLOCK_FAMILIES = ("transformer", "mamba", "s4", "s4_mamba")


@pytest.mark.slow
class PaddedEqualsExactTest(parameterized.TestCase):

  def test_block_families_cover_every_block_and_position_kind(self):
    def kinds(families):
      return ({block for f in families for block in f.pattern(2)},
              {f.pos_emb for f in families})
    self.assertEqual(kinds([families.FAMILIES[name] for name in BLOCK_FAMILIES]),
                     kinds(list(families.FAMILIES.values())))

  @parameterized.parameters(*BLOCK_FAMILIES)
  def test_loss_and_gradients(self, family):
    config = linear_regression.get_config(f"{family},tiny")
    task, curriculum, model_cfg, _ = loop.build(config)
    model = models.build_model(model_cfg)
    pad = curriculum.points_end
    n_points = pad - 3

    @jax.jit
    def run(key):
      """(loss, grads) of the exact prompt and of the padded one."""
      exact = task.sample(key, 4, n_points, None)
      padded = task.sample_padded(key, 4, n_points, pad, None)
      params = nn.meta.unbox(model.init(jax.random.key(0), exact.tokens))

      def loss_fn(p, prompt):
        out = model.apply(p, prompt.tokens, deterministic=False,
                          rngs={"dropout": jax.random.key(7)})
        return base.masked_loss(base.gather_predictions(out, prompt), prompt)

      grad_fn = jax.value_and_grad(loss_fn)
      return grad_fn(params, exact), grad_fn(params, padded)

    (loss, grads), (loss_p, grads_p) = run(jax.random.key(3))
    self.assertLessEqual(_relative(loss_p, loss), RTOL)
    flat = lambda tree: np.concatenate(
        [np.ravel(x) for x in jax.tree.leaves(tree)])
    self.assertLessEqual(_relative(flat(grads_p), flat(grads)), RTOL)
    # Per parameter: S4D's FFT convolution has the (padded) length in its
    # FFT size, whose rounding moves the small A_imag / log_dt gradients by
    # up to ~2e-6 of their norm; every other parameter stays within RTOL.
    per_leaf = jax.tree.map(_relative, grads_p, grads)
    self.assertLessEqual(max(jax.tree.leaves(per_leaf)), 10 * RTOL, per_leaf)

if __name__ == "__main__":
  absltest.main()
