"""Tests for ssm_icl/compile_cache.py: where the cache goes, and that a
second start of the same training run loads its programs from it."""

import os
import re
from unittest import mock

from absl.testing import absltest

from ssm_icl import compile_cache
from tests.train import cli_util


class DirectoryTest(absltest.TestCase):

  def test_default_is_the_user_cache_dir(self):
    with mock.patch.dict(os.environ, {"XDG_CACHE_HOME": "/xdg"}):
      os.environ.pop(compile_cache.ENV_DIR, None)
      self.assertEqual(compile_cache.default_directory(), "/xdg/ssm_icl/jax")
    with mock.patch.dict(os.environ, {"HOME": "/home/u"}):
      os.environ.pop(compile_cache.ENV_DIR, None)
      os.environ.pop("XDG_CACHE_HOME", None)
      self.assertEqual(compile_cache.resolve_directory(None),
                       "/home/u/.cache/ssm_icl/jax")

  def test_jax_variable_wins_over_the_default(self):
    with mock.patch.dict(os.environ, {compile_cache.ENV_DIR: "/jaxcache"}):
      self.assertEqual(compile_cache.resolve_directory(None), "/jaxcache")

  def test_flag_values(self):
    for off in ("off", "OFF", "", "none"):
      self.assertIsNone(compile_cache.resolve_directory(off))
    with mock.patch.dict(os.environ, {"HOME": "/home/u"}):
      self.assertEqual(compile_cache.resolve_directory("~/c"), "/home/u/c")
    self.assertEqual(compile_cache.resolve_directory("gs://b/c"), "gs://b/c")

  def test_stats_summary(self):
    stats = compile_cache.CacheStats()
    stats.on_event("/jax/compilation_cache/cache_hits")
    stats.on_duration("/jax/compilation_cache/compile_time_saved_sec", 2.5)
    for _ in range(3):
      stats.on_duration("/jax/core/compile/backend_compile_duration", 0.5)
    self.assertEqual((stats.hits, stats.compiled), (1, 2))
    self.assertEqual(stats.summary(), "1 programs loaded (saved 2.5 s of "
                     "compilation), 2 compiled; 1.5 s spent compiling or "
                     "loading")


class SecondStartTest(absltest.TestCase):

  def test_second_start_of_a_run_loads_its_programs(self):
    root = self.create_tempdir().full_path
    cache, workdir = os.path.join(root, "cache"), os.path.join(root, "run")
    stats = []
    for steps in (2, 4):  # the second start resumes from step 2
      result = cli_util.run(cli_util.main_args(
          workdir, f"--config.train.steps={steps}",
          "--config.train.eval_every=0", f"--compile_cache={cache}"),
          timeout=600, n_devices=1)
      self.assertEqual(result.returncode, 0, result.stderr[-3000:])
      line = result.stdout.strip().splitlines()[-1]
      self.assertStartsWith(line, f"Compilation cache {cache}:")
      hits, compiled = re.search(
          r"(\d+) programs loaded .* (\d+) compiled", line).groups()
      stats.append((int(hits), int(compiled)))
      self.assertIn(f"Step {steps - 1} done", result.stdout)
    (hits_1, compiled_1), (hits_2, compiled_2) = stats
    self.assertEqual(hits_1, 0)
    self.assertGreater(compiled_1, 0)
    # The resumed start compiles nothing: its train step (and every other
    # program) comes from the cache.
    self.assertEqual(compiled_2, 0)
    self.assertGreater(hits_2, 0)
    self.assertNotEmpty(os.listdir(cache))

if __name__ == "__main__":
  absltest.main()
