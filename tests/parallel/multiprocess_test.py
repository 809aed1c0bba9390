"""2 processes x 4 devices (jax.distributed on 127.0.0.1) match 1 x 8.

Both processes write one workdir: a local directory, or a gs:// bucket on
the local GCS emulator (tests/gcs_emulator.py), as on a TPU pod.
"""

import os
import shutil
import socket
import subprocess

from absl.testing import absltest
import jax
import numpy as np
import pytest

from configs import linear_regression
from ssm_icl.train import loop
from ssm_icl.train import metrics
from tests import gcs_emulator
from tests.train import cli_util

_STEPS = 10
_TRAIN = dict(steps=_STEPS, log_every=1, eval_every=0)


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.multiprocess
class MultiProcessTest(absltest.TestCase):

  _one = None  # the 1 x 8 reference run, shared by the tests

  @classmethod
  def _reference(cls):
    """(TrainResult, workdir) of the 1 x 8 run in this process."""
    if cls._one is None:
      one_dir = os.path.join(absltest.get_default_test_tmpdir(), "mp_one")
      shutil.rmtree(one_dir, ignore_errors=True)
      config = linear_regression.get_config("mamba,tiny")
      config.train.update(_TRAIN)
      config.ckpt.every = 5
      cls._one = (loop.train_and_evaluate(config, one_dir), one_dir)
    return cls._one

  def _check_two_processes(self, two_dir):
    # 2 processes x 4 CPU devices, both writing the same workdir.
    port = _free_port()
    overrides = [f"--config.train.{k}={v}" for k, v in _TRAIN.items()]
    overrides += ["--config.ckpt.every=5", f"--coordinator_address=127.0.0.1:"
                  f"{port}", "--num_processes=2"]
    # No persistent compilation cache: only process 0 writes its entries,
    # so with a warm cache process 0 would skip compiling while process 1
    # compiles, and on a loaded machine arrive at the first collective more
    # than the 30 s that CPU (gloo) collectives wait for a peer.
    processes = [
        cli_util.start(cli_util.main_args(two_dir, *overrides,
                                          f"--process_id={i}"),
                       n_devices=4, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE,
                       env_overrides={"JAX_ENABLE_COMPILATION_CACHE": "false"})
        for i in range(2)]
    # The 1 x 8 run in this process overlaps with the subprocesses' start.
    one, one_dir = self._reference()
    outputs = [p.communicate(timeout=300) for p in processes]
    for i, (p, (out, err)) in enumerate(zip(processes, outputs)):
      self.assertEqual(p.returncode, 0, f"process {i}: {err[-3000:]}")
    # Process 0 prints and writes metrics; process 1 stays quiet.
    self.assertIn(f"step {_STEPS}/{_STEPS}", outputs[0][0])
    self.assertIn("(2 processes)", outputs[0][0])
    self.assertNotIn("step ", outputs[1][0])

    want = [r["train/loss"] for r in metrics.read_metrics(one_dir)]
    got = [r["train/loss"] for r in metrics.read_metrics(two_dir)]
    self.assertLen(got, _STEPS)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    params = cli_util.saved_params(two_dir, _STEPS)
    flat = {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v)
            for path, v in jax.tree_util.tree_flatten_with_path(
                jax.device_get(one.state.params))[0]}
    self.assertEqual(params.keys(), flat.keys())
    for name, value in flat.items():
      np.testing.assert_allclose(params[name], value, rtol=1e-5, atol=1e-7,
                                 err_msg=name)

  def test_two_processes_match_one_process(self):
    two_dir = os.path.join(absltest.get_default_test_tmpdir(), "mp_two")
    shutil.rmtree(two_dir, ignore_errors=True)
    self._check_two_processes(two_dir)

  def test_two_processes_on_a_gcs_workdir(self):
    self._check_two_processes(gcs_emulator.new_bucket("multihost") + "/run")


if __name__ == "__main__":
  absltest.main()
