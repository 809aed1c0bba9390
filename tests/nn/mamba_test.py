"""Tests for ssm_icl.nn.mamba."""

import math

from absl.testing import absltest
from absl.testing import parameterized
from flax import linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ssm_icl import errors
from ssm_icl.nn import axes
from ssm_icl.nn import mamba
from ssm_icl.ops import scan as scan_lib

_D_MODEL = 16
_STATE4 = mamba.MambaConfig(d_state=4)


def _silu(x):
  return x / (1 + np.exp(-x))


def _softplus(x):
  return np.log1p(np.exp(x))


def _reference(p, h, d_conv):
  """Official Mamba v1 forward, per time step, float64 numpy."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
  h = np.asarray(h, np.float64)
  b, l, _ = h.shape
  xz = h @ p["in_proj"]["kernel"]
  e = xz.shape[-1] // 2
  x, z = xz[..., :e], xz[..., e:]
  w, cb = p["conv1d"]["kernel"], p["conv1d"]["bias"]
  u = np.zeros_like(x)
  for t in range(l):
    for k in range(d_conv):
      s = t - (d_conv - 1) + k
      if s >= 0:
        u[:, t] += w[k] * x[:, s]
  u = _silu(u + cb)
  x_dbl = u @ p["x_proj"]["kernel"]
  r = p["dt_proj"]["kernel"].shape[0]
  n = p["A_log"].shape[1]
  dt_low, B, C = x_dbl[..., :r], x_dbl[..., r:r + n], x_dbl[..., r + n:]
  delta = _softplus(dt_low @ p["dt_proj"]["kernel"] + p["dt_proj"]["bias"])
  A = -np.exp(p["A_log"])
  y = np.zeros_like(u)
  for i in range(b):
    state = np.zeros((e, n))
    for t in range(l):
      state = (np.exp(delta[i, t][:, None] * A) * state
               + (delta[i, t] * u[i, t])[:, None] * B[i, t][None, :])
      y[i, t] = state @ C[i, t] + p["D"] * u[i, t]
  y = y * _silu(z)
  return y @ p["out_proj"]["kernel"]


def _init(mixer, h, seed=0):
  variables = jax.jit(mixer.init)(jax.random.key(seed), h)
  return variables, nn.meta.unbox(variables)["params"]


def _apply(mixer, variables, h):
  return jax.jit(mixer.apply)(variables, h)


class MambaMixerTest(parameterized.TestCase):

  @parameterized.named_parameters(("sequential", "sequential"),
                                  ("chunked", "chunked"),
                                  ("pallas", "pallas"))  # interpret on CPU
  def test_matches_per_step_recomputation(self, scan_impl):
    h = jax.random.normal(jax.random.key(1), (2, 9, _D_MODEL))
    mixer = mamba.MambaMixer(
        d_model=_D_MODEL,
        config=mamba.MambaConfig(d_state=4, scan_impl=scan_impl, chunk_size=4))
    variables, p = _init(mixer, h)
    # Perturb the init so A_log and D are not constants.
    p = jax.tree.map(
        lambda a: a + 0.1 * jax.random.normal(jax.random.key(7), a.shape), p)
    y = _apply(mixer, {"params": p}, h)
    self.assertEqual(y.shape, h.shape)
    np.testing.assert_allclose(y, _reference(p, h, 4), rtol=1e-4, atol=1e-5)
    del variables

  def test_parameter_shapes_follow_official_mamba(self):
    mixer = mamba.MambaMixer(d_model=32)
    p = nn.meta.unbox(jax.eval_shape(mixer.init, jax.random.key(0),
                                     jnp.zeros((1, 4, 32))))["params"]
    e, n, r = 64, 16, 2
    shapes = jax.tree.map(lambda a: a.shape, p)
    self.assertEqual(shapes, {
        "in_proj": {"kernel": (32, 2 * e)},
        "conv1d": {"kernel": (4, e), "bias": (e,)},
        "x_proj": {"kernel": (e, r + 2 * n)},
        "dt_proj": {"kernel": (r, e), "bias": (e,)},
        "A_log": (e, n),
        "D": (e,),
        "out_proj": {"kernel": (e, 32)},
    })
    self.assertEqual(mixer.resolved_dt_rank, r)

  def test_initialisation_statistics(self):
    mixer = mamba.MambaMixer(d_model=32, n_layer=4)
    _, p = _init(mixer, jnp.zeros((1, 4, 32)))
    np.testing.assert_allclose(
        p["A_log"], np.log(np.tile(np.arange(1, 17), (64, 1))), rtol=1e-6)
    np.testing.assert_array_equal(p["D"], 1.0)
    dt = _softplus(np.asarray(p["dt_proj"]["bias"], np.float64))
    self.assertGreaterEqual(dt.min(), 1e-3 * (1 - 1e-4))
    self.assertLessEqual(dt.max(), 0.1 * (1 + 1e-4))
    # Log-uniform, not clustered at one end.
    self.assertLess(dt.min(), 3e-3)
    self.assertGreater(dt.max(), 3e-2)
    bounds = {
        ("dt_proj", "kernel"): 1 / math.sqrt(2),
        ("conv1d", "kernel"): 0.5,
        ("conv1d", "bias"): 0.5,
        ("in_proj", "kernel"): 1 / math.sqrt(32),
        ("x_proj", "kernel"): 1 / math.sqrt(64),
        ("out_proj", "kernel"): 1 / math.sqrt(64) / math.sqrt(4),
    }
    for (module, name), bound in bounds.items():
      v = np.abs(np.asarray(p[module][name]))
      self.assertLessEqual(v.max(), bound, (module, name))
      self.assertGreater(v.max(), 0.8 * bound, (module, name))
    for a in (p["A_log"], p["D"], p["dt_proj"]["bias"]):
      self.assertEqual(a.dtype, jnp.float32)

  def test_every_param_has_logical_axes(self):
    mixer = mamba.MambaMixer(d_model=_D_MODEL, bias=True)
    variables, _ = _init(mixer, jnp.zeros((1, 4, _D_MODEL)))
    boxes = jax.tree.leaves(
        variables, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
    self.assertLen(boxes, 11)
    for box in boxes:
      self.assertIsInstance(box, nn.LogicallyPartitioned)
      self.assertLen(box.names, box.value.ndim)
    specs = nn.get_partition_spec(variables)["params"]
    self.assertEqual(tuple(specs["A_log"]), (axes.INNER, axes.STATE))
    self.assertEqual(tuple(specs["x_proj"]["kernel"]),
                     (axes.INNER, axes.XPROJ))
    self.assertEqual(tuple(specs["dt_proj"]["kernel"]),
                     (axes.DT_RANK, axes.INNER))
    # in_proj / out_proj biases start at zero, as `_init_weights` does.
    p = nn.meta.unbox(variables)["params"]
    np.testing.assert_array_equal(p["in_proj"]["bias"], 0.0)
    np.testing.assert_array_equal(p["out_proj"]["bias"], 0.0)

  def test_bfloat16_compute_keeps_ssm_params_float32(self):
    h = jax.random.normal(jax.random.key(1), (2, 5, _D_MODEL))
    mixer = mamba.MambaMixer(d_model=_D_MODEL, config=_STATE4,
                             dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    variables, p = _init(mixer, h)
    self.assertEqual(p["in_proj"]["kernel"].dtype, jnp.bfloat16)
    for a in (p["A_log"], p["D"], p["dt_proj"]["bias"]):
      self.assertEqual(a.dtype, jnp.float32)
    y = _apply(mixer, variables, h)
    self.assertEqual(y.dtype, jnp.bfloat16)
    p32 = jax.tree.map(lambda a: a.astype(jnp.float32), p)
    want = _apply(mamba.MambaMixer(d_model=_D_MODEL, config=_STATE4),
                  {"params": p32}, h)
    np.testing.assert_allclose(y.astype(jnp.float32), want, rtol=0.1,
                               atol=0.05)

  def test_is_causal(self):
    h = jax.random.normal(jax.random.key(1), (1, 8, _D_MODEL))
    mixer = mamba.MambaMixer(d_model=_D_MODEL, config=_STATE4)
    variables, _ = _init(mixer, h)
    y = _apply(mixer, variables, h)
    y2 = _apply(mixer, variables, h.at[:, 4].set(3.0))
    np.testing.assert_array_equal(y[:, :4], y2[:, :4])
    self.assertGreater(np.abs(y[:, 4:] - y2[:, 4:]).max(), 1e-4)

  @parameterized.parameters(0, -2, "big", 2.5)
  def test_bad_dt_rank(self, dt_rank):
    with self.assertRaisesRegex(ValueError, "dt_rank must be 'auto' or a "
                                "positive int"):
      mamba.resolve_dt_rank(dt_rank, 16)

  def test_auto_dt_rank(self):
    self.assertEqual(mamba.resolve_dt_rank("auto", 128), 8)
    self.assertEqual(mamba.resolve_dt_rank("auto", 130), 9)
    self.assertEqual(mamba.resolve_dt_rank(3, 130), 3)


  def test_cache_continues_the_sequence(self):
    h = jax.random.normal(jax.random.key(1), (2, 7, _D_MODEL))
    mixer = mamba.MambaMixer(d_model=_D_MODEL, config=_STATE4)
    variables, _ = _init(mixer, h)
    want = _apply(mixer, variables, h)
    cache = mixer.init_cache(2, max_len=7)
    self.assertEqual(cache.conv.shape, (2, 3, 2 * _D_MODEL))
    self.assertEqual(cache.ssm.shape, (2, 2 * _D_MODEL, 4))
    y0, cache = mixer.apply(variables, h[:, :5], cache=cache)  # prefill
    steps = [y0]
    for t in (5, 6):
      y, cache = mixer.apply(variables, h[:, t:t + 1], cache=cache)
      steps.append(y)
    got = jnp.concatenate(steps, axis=1)
    np.testing.assert_allclose(got, want, rtol=1e-5,
                               atol=1e-5 * np.abs(want).max())


class MambaConfigTest(parameterized.TestCase):

  def test_defaults_and_derived_sizes(self):
    c = mamba.MambaConfig()
    self.assertEqual((c.d_state, c.d_conv, c.expand), (16, 4, 2))
    self.assertEqual((c.d_inner(40), c.resolved_dt_rank(40)), (80, 3))
    self.assertIs(mamba.MambaConfig(scan_impl="chunked").scan_impl,
                  scan_lib.ScanImpl.CHUNKED)

  @parameterized.named_parameters(
      ("d_state", dict(d_state=0), "d_state must be positive, got 0"),
      ("expand", dict(expand=1.5), "expand must be an int, got 1.5"),
      ("dt_rank", dict(dt_rank="big"), "dt_rank must be an int, got 'big'"),
      ("dt_order", dict(dt_min=0.2), "dt_min=0.2 must not exceed dt_max=0.1"),
      ("floor", dict(dt_init_floor=0), "dt_init_floor must be a positive"),
      ("scan_impl", dict(scan_impl="fast"),
       r"Unknown scan_impl 'fast'; expected one of \['auto', 'sequential'"),
      ("chunk_size", dict(chunk_size=-1), "chunk_size must be positive"),
  )
  def test_bad_values_name_the_field(self, kwargs, message):
    with self.assertRaisesRegex(errors.UserError, message):
      mamba.MambaConfig(**kwargs)


if __name__ == "__main__":
  absltest.main()
