"""Test configuration: 8 fake CPU devices, absl flags, compile cache, interop.

The XLA flag must be set before anything initialises a JAX backend, so it is
done at import time of this conftest, which pytest loads before test modules.
"""

import ast
import importlib.util
import os
import tempfile

_FLAG = "--xla_force_host_platform_device_count=8"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # pylint: disable=g-import-not-at-top
from absl import flags  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

# A persistent compilation cache makes re-runs of the suite much faster; the
# directory lives in the system temp dir so a fresh CI clone still works.
jax.config.update(
    "jax_compilation_cache_dir",
    os.path.join(tempfile.gettempdir(), "ssm_icl_jax_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

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
