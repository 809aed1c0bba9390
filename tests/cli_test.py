"""Tests for ssm_icl/cli.py: a user's mistake is one `error:` line.

Each mistake runs through its real command line in a subprocess (in
parallel, a few at a time): exit status 2, exactly one line starting with
`error:` that names the culprit, and no Python traceback. A bug, by
contrast, keeps its traceback.
"""

import concurrent.futures
import os
import sys
from unittest import mock

from absl.testing import absltest
import jax
import numpy as np

from configs import linear_regression
from ssm_icl import cli
from ssm_icl import errors
from ssm_icl import host_memory
from ssm_icl.train import checkpoint
from tests.train import cli_util

_PY = sys.executable
_TINY = "configs/linear_regression.py:mamba,tiny"


def _main(workdir, *args, config=_TINY):
  return [_PY, "-m", "ssm_icl.main", f"--config={config}",
          f"--workdir={workdir}", *args]


class ErrorLineTest(absltest.TestCase):

  def test_error_line_indents_continuation_lines(self):
    self.assertEqual(cli.error_line("bad x\n  a: 1\nb: 2"),
                     "error: bad x\n    a: 1\n  b: 2")
    self.assertEqual(cli.error_line(""), "error: (no message)")

  def test_user_errors_are_value_and_type_errors(self):
    self.assertIsInstance(errors.UserError("x"), ValueError)
    self.assertIsInstance(errors.UserTypeError("x"), TypeError)
    self.assertIsInstance(errors.UserTypeError("x"), errors.UserError)


class StartTest(absltest.TestCase):

  def test_start_applies_the_host_malloc_choice_before_the_cache(self):
    calls = []
    with mock.patch.object(host_memory, "configure",
                           lambda: calls.append("malloc")), \
         mock.patch.object(cli.compile_cache, "configure",
                           lambda value: calls.append("cache") or "dir"):
      self.assertEqual(cli.start(), "dir")
    self.assertEqual(calls, ["malloc", "cache"])


class CommandLineMistakesTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    root = absltest.get_default_test_tmpdir()
    cls.root = os.path.join(root, "cli_mistakes")
    os.makedirs(cls.root, exist_ok=True)
    # A checkpoint written with another model width than the tiny config.
    cls.ckpt_dir = os.path.join(cls.root, "other_run")
    saved = linear_regression.get_config("mamba,tiny").to_dict()
    saved["model"]["d_model"] = 32
    ckpt = checkpoint.Checkpointer(cls.ckpt_dir, every=5, max_to_keep=None,
                                   async_save=False)
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    if not ckpt.all_steps():
      ckpt.save(5, {"x": np.zeros(2)}, checkpoint.make_meta(saved, 5, mesh))
    ckpt.close()
    cls.a_file = os.path.join(cls.root, "a_file")
    with open(cls.a_file, "w") as f:
      f.write("x")
    cls.empty = os.path.join(cls.root, "empty")
    os.makedirs(cls.empty, exist_ok=True)

  def test_every_mistake_prints_one_error_line_without_traceback(self):
    fresh = os.path.join(self.root, "fresh")
    cases = {  # args -> text the error line must contain
        "unknown config key": (
            _main(fresh, "--config.train.nope=1"),
            "unknown config key 'nope' in the overrides "
            "['--config.train.nope']"),
        "config value of the wrong type": (
            _main(fresh, "--config.train.lr=abc"), "--config.train.lr=abc"),
        "bad config argument": (
            _main(fresh, config="configs/linear_regression.py:mamba,huge"),
            "unknown key 'huge'"),
        "missing config file": (
            _main(fresh, config="configs/nope.py"),
            "cannot load the config file"),
        "unknown flag": (_main(fresh, "--nope=1"), "nope"),
        "workdir not writable": (
            _main(os.path.join(self.a_file, "run")), "is not writable"),
        "bad train value": (
            _main(fresh, "--config.train.matmul_precision=fast"),
            "train.matmul_precision='fast'"),
        "bad model value": (
            _main(fresh, "--config.model.scan_impl=nope"),
            "Unknown scan_impl 'nope'"),
        "mesh vs devices": (
            _main(fresh, "--config.mesh.shape=(3, 1)"),
            "mesh.shape=(3, 1) covers 3 devices"),
        "incompatible checkpoint": (
            _main(self.ckpt_dir),
            "written with an incompatible config"),
        "eval: no checkpoint": (
            [_PY, "-m", "ssm_icl.eval", f"--workdir={self.empty}"],
            "has no checkpoints/ directory"),
        "eval: missing step": (
            [_PY, "-m", "ssm_icl.eval", f"--workdir={self.ckpt_dir}",
             "--step=7"], "step=7 has no checkpoint"),
        "reproduce: unknown suite": (
            [_PY, "-m", "ssm_icl.reproduce", "--suite=nope",
             f"--workdir={fresh}"], "--suite"),
        "reproduce: unknown task": (
            [_PY, "-m", "ssm_icl.reproduce", "--suite=smoke",
             f"--workdir={fresh}", "--tasks=nope", "--dry_run"],
            "Unknown task(s) ['nope']"),
    }
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
      results = dict(zip(cases, pool.map(
          lambda c: cli_util.run(c[0], timeout=300), cases.values())))
    for name, (_, expected) in cases.items():
      with self.subTest(name):
        result = results[name]
        output = result.stdout + result.stderr
        self.assertEqual(result.returncode, cli.EXIT_USER_ERROR, output)
        self.assertNotIn("Traceback", output)
        lines = [l for l in result.stderr.splitlines()
                 if l.startswith("error:")]
        self.assertLen(lines, 1, output)
        self.assertIn(expected, result.stderr)

  def test_a_bug_keeps_its_traceback(self):
    script = ("from ssm_icl import cli\n"
              "def main(argv):\n"
              "  raise RuntimeError('a bug')\n"
              "cli.run(main)\n")
    result = cli_util.run([_PY, "-c", script])
    self.assertEqual(result.returncode, 1)
    self.assertIn("Traceback", result.stderr)
    self.assertIn("RuntimeError: a bug", result.stderr)
    self.assertNotIn("error:", result.stderr)


if __name__ == "__main__":
  absltest.main()
