"""Test configuration: 8 fake CPU devices, parsed absl flags, compile cache.

The XLA flag must be set before anything initialises a JAX backend, so it is
done at import time of this conftest, which pytest loads before test modules.
"""

import os
import tempfile

_FLAG = "--xla_force_host_platform_device_count=8"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # pylint: disable=g-import-not-at-top
from absl import flags  # pylint: disable=g-import-not-at-top

# A persistent compilation cache makes re-runs of the suite much faster; the
# directory lives in the system temp dir so a fresh CI clone still works.
jax.config.update(
    "jax_compilation_cache_dir",
    os.path.join(tempfile.gettempdir(), "ssm_icl_jax_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

if not flags.FLAGS.is_parsed():
  flags.FLAGS.mark_as_parsed()
