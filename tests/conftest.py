"""Test configuration: 8 fake CPU devices, absl flags, compile cache, temp
dirs, slow files first, interop.

The XLA flag must be set before anything initialises a JAX backend, so it is
done at import time of this conftest, which pytest loads before test modules
(in every pytest-xdist worker too: each worker is a pytest process of its own).
"""

import ast
import importlib.util
import os
import shutil
import tempfile

_FLAG = "--xla_force_host_platform_device_count=8"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # pylint: disable=g-import-not-at-top
from absl import flags  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

# A persistent compilation cache makes re-runs of the suite much faster:
# JAX_COMPILATION_CACHE_DIR where set (an empty directory measures a cold
# run), else one in the system temp dir, so a fresh CI clone still works.
# Exported, so that the subprocesses the tests start (tests/train/cli_util.py)
# and the other xdist workers share it. Sharing is safe: an entry read while
# another process is still writing it fails to load, and JAX then warns and
# compiles the program itself.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), "ssm_icl_jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
jax.config.update("jax_compilation_cache_dir",
                  os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update(
    "jax_persistent_cache_min_compile_time_secs",
    float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))

# absl's temp dir (absltest.get_default_test_tmpdir(), the parent of every
# create_tempdir()) defaults to one fixed directory per machine, which tests
# that keep a class-level workdir there would share with the other xdist
# workers and with any other test run on the machine (see pytest_configure).
_OWN_TMPDIR = None

if not flags.FLAGS.is_parsed():
  flags.FLAGS.mark_as_parsed()


# Test modules that need the `interop` extra (torch, transformers) declare
# `pytestmark = pytest.mark.interop` and import torch at the top. Where the
# extra is not installed (the newest-JAX CI leg: PyTorch for that Python is a
# multi-gigabyte CUDA download), such a module is collected as one stand-in
# test marked `interop`: `-m "not interop"` deselects it and pytest counts it
# as deselected; run anyway, it fails and says what to install. No test is
# skipped in silence.
_INTEROP_PACKAGES = ("torch", "transformers", "safetensors")


class _NeedsInteropExtra(pytest.Item):
  """Fails, naming the missing packages; marked `interop`."""

  def __init__(self, *, missing, **kwargs):
    super().__init__(**kwargs)
    self.missing = missing
    self.add_marker(pytest.mark.interop)

  def runtest(self):
    pytest.fail(
        f"{self.path.name} needs the `interop` extra ({', '.join(self.missing)}"
        " not installed): install torch==2.13.0 (CPU build) and then `pip "
        "install -e '.[interop]'`, or deselect these tests with "
        "-m 'not interop'", pytrace=False)

  def reportinfo(self):
    return self.path, None, self.name


class _InteropModule(pytest.File):

  def __init__(self, *, missing, **kwargs):
    super().__init__(**kwargs)
    self.missing = missing

  def collect(self):
    yield _NeedsInteropExtra.from_parent(self, name="needs_interop_extra",
                                         missing=self.missing)


def _marked_interop(module_path):
  """Whether the module assigns `pytestmark = pytest.mark.interop`."""
  tree = ast.parse(module_path.read_text(encoding="utf-8"))
  return any(
      isinstance(node, ast.Assign) and
      [ast.unparse(t) for t in node.targets] == ["pytestmark"] and
      ast.unparse(node.value) == "pytest.mark.interop" for node in tree.body)


def pytest_pycollect_makemodule(module_path, parent):
  if not _marked_interop(module_path):
    return None
  missing = [name for name in _INTEROP_PACKAGES
             if importlib.util.find_spec(name) is None]
  if not missing:
    return None
  return _InteropModule.from_parent(parent, path=module_path, missing=missing)


def pytest_configure(config):
  """Gives this pytest session, and each of its xdist workers, a temp dir.

  The session's is fresh (removed at its end) unless the caller set
  TEST_TMPDIR; each worker takes a subdirectory of it named after itself (the
  workers inherit the controller's environment). It runs before the test
  modules are imported, and with them absltest, which reads TEST_TMPDIR then.
  A worker is told by `config.workerinput`, not by PYTEST_XDIST_WORKER, which
  the subprocesses of a worker's tests inherit.
  """
  global _OWN_TMPDIR
  if "TEST_TMPDIR" not in os.environ:
    _OWN_TMPDIR = tempfile.mkdtemp(prefix="ssm_icl_tests_")
    os.environ["TEST_TMPDIR"] = _OWN_TMPDIR
  worker = getattr(config, "workerinput", {}).get("workerid")
  if worker is not None:
    os.environ["TEST_TMPDIR"] = os.path.join(os.environ["TEST_TMPDIR"], worker)
  os.makedirs(os.environ["TEST_TMPDIR"], exist_ok=True)


def pytest_unconfigure(config):
  del config
  if _OWN_TMPDIR is not None:
    shutil.rmtree(_OWN_TMPDIR, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
  """Puts the files that hold `slow` tests first, in collection order.

  launch/test.sh hands whole files to the xdist workers (`--dist loadfile
  --no-loadscope-reorder`) in this order: a long end-to-end file that came
  last would keep one worker busy while the others have finished.
  """
  del config
  slow_files = {item.path for item in items if item.get_closest_marker("slow")}
  items.sort(key=lambda item: item.path not in slow_files)
