"""Tests of tests/conftest.py: interop test modules without the extra.

Each test runs pytest in a subprocess on two tiny test modules, with
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


class InteropStandInTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.dir = self.create_tempdir()
    self.dir.create_file("pytest.ini", "[pytest]\npython_files = *_test.py\n"
                         "markers =\n    interop: needs torch\n")
    self.dir.create_file("torch_test.py", _INTEROP_MODULE)
    self.dir.create_file("plain_test.py", "def test_plain():\n  pass\n")

  def pytest(self, *args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [ROOT] + os.environ.get("PYTHONPATH", "").split(os.pathsep)))
    return subprocess.run(
        [sys.executable, "-c", _PYTEST_WITHOUT_TORCH, "-p", "tests.conftest",
         "-p", "no:cacheprovider", "-q", *args], cwd=self.dir.full_path,
        env=env, capture_output=True, text=True, timeout=300, check=False)

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


if __name__ == "__main__":
  absltest.main()
