"""Tests for ssm_icl.models.weights_io (files without torch).

Torch files (.pt) and the refusal of arbitrary pickles are tested in
interop_test.py, which needs the `interop` extra.
"""

from absl.testing import absltest
import jax.numpy as jnp
import numpy as np

from ssm_icl.models import weights_io


def _assert_dicts_equal(a, b):
  assert sorted(a) == sorted(b), (sorted(a), sorted(b))
  for k in a:
    np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]))
    assert a[k].dtype == b[k].dtype, (k, a[k].dtype, b[k].dtype)


class FileTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    rng = np.random.default_rng(0)
    self.sd = {"_read_in.weight": rng.normal(size=(4, 3)).astype(np.float32),
               "_read_in.bias": rng.normal(size=(4,)).astype(np.float32),
               "layers.0.mixer.A_log": np.log(np.arange(1.0, 5.0)),
               "step": np.asarray(7, np.int64)}

  def test_safetensors_round_trip(self):
    path = self.create_tempfile("m.safetensors").full_path
    weights_io.save_safetensors(self.sd, path, metadata={"family": "mamba"})
    _assert_dicts_equal(weights_io.load_checkpoint_file(path), self.sd)

  def test_bfloat16_safetensors_round_trip(self):
    path = self.create_tempfile("bf16.safetensors").full_path
    sd = {k: v.astype(jnp.bfloat16) for k, v in self.sd.items()}
    weights_io.save_safetensors(sd, path)
    loaded = weights_io.load_checkpoint_file(path)
    self.assertEqual(loaded["_read_in.weight"].dtype, jnp.bfloat16)
    _assert_dicts_equal(loaded, sd)

  def test_npz_and_key(self):
    path = self.create_tempfile("m.npz").full_path
    np.savez(path, **self.sd)
    _assert_dicts_equal(weights_io.load_checkpoint_file(path), self.sd)
    with self.assertRaisesRegex(ValueError, "has no entry key='model'"):
      weights_io.load_checkpoint_file(path, key="model")

  def test_unknown_suffix(self):
    path = self.create_tempfile("m.pkl").full_path
    with self.assertRaisesRegex(ValueError, "Unknown checkpoint suffix '.pkl'"):
      weights_io.load_checkpoint_file(path)


  def test_bad_values_are_named(self):
    with self.assertRaisesRegex(ValueError, r"'x' \(str\)"):
      weights_io.to_numpy({"x": "not an array"})
    with self.assertRaisesRegex(TypeError, "must be a mapping"):
      weights_io.to_numpy([1, 2])


if __name__ == "__main__":
  absltest.main()
