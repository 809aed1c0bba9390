"""Tests of tests/conftest.py: interop test modules without the extra, temp
dirs per xdist worker, slow files first.

Each test runs pytest in a subprocess on tiny test modules, with
tests/conftest.py loaded as a plugin and torch hidden from it (a `None` entry
in sys.modules makes importlib.util.find_spec report it missing, as on the
newest-stack CI leg, which has no torch).
"""

import os
import subprocess
import sys

from absl.testing import absltest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PYTEST_WITHOUT_TORCH = ("import sys; sys.modules['torch'] = None; "
                         "import pytest; sys.exit(pytest.main(sys.argv[1:]))")
_INTEROP_MODULE = """\
import pytest
import torch

pytestmark = pytest.mark.interop


def test_needs_torch():
  assert torch.ones(1).item() == 1
"""


# Each test records absl's temp dir and its xdist worker in $RECORD_DIR.
_TMPDIR_MODULE = """\
import os
from absl.testing import absltest


def test_{name}():
  tmpdir = absltest.get_default_test_tmpdir()
  assert os.path.isdir(tmpdir)
  with open(os.path.join(os.environ["RECORD_DIR"], "{name}"), "w") as f:
    f.write(os.environ["PYTEST_XDIST_WORKER"] + " " + tmpdir)
"""


class ConftestTestCase(absltest.TestCase):
  """Runs pytest with tests/conftest.py in a temp dir of test modules."""

  def setUp(self):
    super().setUp()
    self.dir = self.create_tempdir()
    self.dir.create_file("pytest.ini", "[pytest]\npython_files = *_test.py\n"
                         "markers =\n    interop: needs torch\n"
                         "    slow: long-running\n")

  def pytest(self, *args, **env_overrides):
    """Runs pytest; `env_overrides` set variables, or unset them if None."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [ROOT] + os.environ.get("PYTHONPATH", "").split(os.pathsep)))
    env.update(env_overrides)
    env = {k: v for k, v in env.items() if v is not None}
    return subprocess.run(
        [sys.executable, "-c", _PYTEST_WITHOUT_TORCH, "-p", "tests.conftest",
         "-p", "no:cacheprovider", "-q", *args], cwd=self.dir.full_path,
        env=env, capture_output=True, text=True, timeout=300, check=False)


class InteropStandInTest(ConftestTestCase):

  def setUp(self):
    super().setUp()
    self.dir.create_file("torch_test.py", _INTEROP_MODULE)
    self.dir.create_file("plain_test.py", "def test_plain():\n  pass\n")

  def test_deselected_by_marker_and_counted(self):
    result = self.pytest("-m", "not interop")
    self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
    self.assertIn("1 passed, 1 deselected", result.stdout)

  def test_selected_it_fails_naming_what_to_install(self):
    result = self.pytest()
    self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
    self.assertRegex(result.stdout, r"torch_test.py needs the `interop` extra "
                     r"\(torch(, \w+)* not installed\)")
    self.assertIn("1 failed, 1 passed", result.stdout)


class XdistTest(ConftestTestCase):

  def test_slow_files_come_first_in_collection_order(self):
    for name in ("a_test.py", "c_test.py"):
      self.dir.create_file(name, "def test_fast():\n  pass\n")
    for name in ("b_test.py", "d_test.py"):
      self.dir.create_file(name, "import pytest\n\n\ndef test_fast():\n  "
                           "pass\n\n\n@pytest.mark.slow\ndef test_slow():"
                           "\n  pass\n")
    result = self.pytest("--collect-only")
    self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
    collected = [line for line in result.stdout.splitlines() if "::" in line]
    self.assertEqual(collected, [
        "b_test.py::test_fast", "b_test.py::test_slow",
        "d_test.py::test_fast", "d_test.py::test_slow",
        "a_test.py::test_fast", "c_test.py::test_fast"])

  def test_each_worker_has_its_own_temp_dir_removed_at_the_end(self):
    for name in ("one", "two"):
      self.dir.create_file(f"{name}_test.py",
                           _TMPDIR_MODULE.format(name=name))
    records = self.create_tempdir().full_path
    result = self.pytest("-n", "2", "--dist", "loadfile",
                         RECORD_DIR=records, TEST_TMPDIR=None)
    self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
    seen = {}
    for name in ("one", "two"):
      with open(os.path.join(records, name), encoding="utf-8") as f:
        worker, tmpdir = f.read().split(" ", 1)
      seen[worker] = tmpdir
    self.assertCountEqual(seen, ["gw0", "gw1"])
    session_dirs = {os.path.dirname(d) for d in seen.values()}
    self.assertLen(session_dirs, 1)
    for worker, tmpdir in seen.items():
      self.assertEqual(os.path.basename(tmpdir), worker)
    # The session's directory is not the machine-wide default, and is gone.
    session_dir = session_dirs.pop()
    self.assertStartsWith(os.path.basename(session_dir), "ssm_icl_tests_")
    self.assertFalse(os.path.exists(session_dir))


if __name__ == "__main__":
  absltest.main()
