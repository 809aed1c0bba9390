"""Tests for ssm_icl.ops.selective_scan_pallas (Pallas interpret mode on CPU).

The kernels run in interpret mode, which compiles slowly, so every config
compiles one function giving values and grads, and the shapes are tiny and
odd: 13 steps in chunks of 4 (ragged last chunk), 5 channels in tiles of 2
(ragged last tile), 3 states (padded to 4 for GPU and 8 for TPU).
"""

import contextlib
import functools

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.extend
from jax import lax
import jax.numpy as jnp
import numpy as np

from ssm_icl.ops import scan as scan_lib
from ssm_icl.ops import selective_scan as selective_scan_lib
from ssm_icl.ops import selective_scan_pallas as pallas_lib
from tests.ops import selective_scan_test as reference

_inputs = reference._inputs  # pylint: disable=protected-access
_np_ref = reference._np_selective_scan_ref  # pylint: disable=protected-access
_residual_bytes = reference._residual_bytes  # pylint: disable=protected-access
_NAMES = reference._NAMES  # pylint: disable=protected-access
_SHAPE = dict(batch=2, length=13, d_inner=5, d_state=3)
_CHUNK = 4
_OPTIONAL = ("D", "dt_bias", "z", "h0")
_BF16 = ("u", "delta", "B", "C", "z")


def _call(args, impl, platform=None, tile_e=None):
  """(y, h_last) of `impl` ("pallas" or a schedule) on a dict of inputs."""
  if impl == "pallas" and (platform or tile_e):
    return pallas_lib.selective_scan_pallas(
        args["u"], args["delta"], args["A_log"], args["B"], args["C"],
        args["D"], dt_bias=args["dt_bias"], z=args["z"], h0=args["h0"],
        chunk_size=_CHUNK, tile_e=tile_e, platform=platform, interpret=True)
  return selective_scan_lib.selective_scan(
      args["u"], args["delta"], args["A_log"], args["B"], args["C"],
      args["D"], dt_bias=args["dt_bias"], z=args["z"], h0=args["h0"],
      impl=impl, chunk_size=_CHUNK, return_last_state=True)


def _loss(args, w, w_last, fn):
  y, h_last = fn(args)
  return jnp.sum(w * y.astype(jnp.float32)) + jnp.sum(w_last * h_last)


@functools.partial(jax.jit, static_argnames=("impl", "platform", "tile_e"))
def _values_and_grads(args, w, w_last, impl, platform=None, tile_e=None):
  """y, h_last and the grads of sum(w y) + sum(w_last h_last)."""
  fn = functools.partial(_call, impl=impl, platform=platform, tile_e=tile_e)
  (y, h_last), vjp = jax.vjp(fn, args)
  return y, h_last, vjp((w.astype(y.dtype), w_last))[0]


def _f64_grads(args, w, w_last):
  """Grads from a float64 `lax.scan` port of `selective_scan_ref`."""
  with jax.enable_x64(True):
    args = {k: None if v is None else jnp.asarray(v, jnp.float64)
            for k, v in args.items()}

    def ref(a):
      delta = jax.nn.softplus(a["delta"] + a["dt_bias"])
      A = -jnp.exp(a["A_log"])

      def step(h, x):
        delta_t, u_t, B_t, C_t = x
        h = (jnp.exp(delta_t[..., None] * A) * h
             + (delta_t * u_t)[..., None] * B_t[:, None])
        return h, jnp.einsum("ben,bn->be", h, C_t)

      xs = [jnp.swapaxes(x, 0, 1) for x in (delta, a["u"], a["B"], a["C"])]
      h_last, y = lax.scan(step, a["h0"], xs)
      y = (jnp.swapaxes(y, 0, 1) + a["D"] * a["u"]) * jax.nn.silu(a["z"])
      return y, h_last

    grads = jax.jit(jax.grad(_loss), static_argnums=3)(
        args, jnp.asarray(w, jnp.float64), jnp.asarray(w_last, jnp.float64),
        ref)
    return jax.tree.map(np.asarray, grads)


def _setup(options="full", seed=0, bf16=False):
  args = _inputs(**_SHAPE, seed=seed)
  if options == "plain":
    args.update({k: None for k in _OPTIONAL})
  if bf16:
    args = {k: jnp.asarray(v, jnp.bfloat16) if k in _BF16 and v is not None
            else v for k, v in args.items()}
  rng = np.random.default_rng(seed + 100)
  w = rng.normal(size=args["u"].shape).astype(np.float32)
  w_last = rng.normal(size=(2, 5, 3)).astype(np.float32)
  return args, w, w_last


def _assert_grads_close(got, want, rtol):
  """Each grad within rtol of the largest |entry| of that grad."""
  for name in want:
    if want[name] is None:
      continue
    g = np.asarray(got[name], np.float64)
    scale = float(np.max(np.abs(want[name])))
    np.testing.assert_allclose(g, want[name], rtol=rtol, atol=rtol * scale,
                               err_msg=name)


class PallasValuesAndGradsTest(parameterized.TestCase):

  @parameterized.parameters(
      # Through `selective_scan(impl="pallas")`, CPU tiling (one tile).
      dict(options="full", platform=None, tile_e=None),
      # The GPU and TPU variants' tiling and padding, interpreted; a ragged
      # last channel tile (5 channels in tiles of 4).
      dict(options="full", platform="gpu", tile_e=4),
      dict(options="plain", platform="tpu", tile_e=None),
  )
  def test_matches_oracle_and_sequential(self, options, platform, tile_e):
    args, w, w_last = _setup(options, seed=3)
    y, h_last, grads = _values_and_grads(args, w, w_last, "pallas",
                                         platform, tile_e)
    y_ref, h_ref = _np_ref(**args)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(h_last, h_ref, rtol=1e-5, atol=1e-5)
    _, _, want = _values_and_grads(args, w, w_last, "sequential")
    self.assertEqual({k for k, v in grads.items() if v is not None},
                     {k for k, v in want.items() if v is not None})
    _assert_grads_close(grads, jax.tree.map(np.asarray, want), 1e-5)

  def test_grads_match_float64_oracle_and_finite_differences(self):
    args, w, w_last = _setup("full", seed=3)
    y, h_last, grads = _values_and_grads(args, w, w_last, "pallas")
    self.assertEqual(set(grads), set(_NAMES))
    _assert_grads_close(grads, _f64_grads(args, w, w_last), 1e-5)

    # Central difference of the loss along a random direction of every
    # input, with the same compiled function (the grads are ignored).
    rng = np.random.default_rng(7)
    direction = {k: rng.normal(size=v.shape).astype(np.float32)
                 for k, v in args.items()}
    eps = 1e-2

    def loss_at(sign):
      moved = {k: v + sign * eps * direction[k] for k, v in args.items()}
      y, h_last, _ = _values_and_grads(moved, w, w_last, "pallas")
      return float(np.sum(np.float64(w) * y) + np.sum(w_last * h_last))

    numeric = (loss_at(1.0) - loss_at(-1.0)) / (2 * eps)
    analytic = sum(float(np.sum(np.float64(grads[k]) * direction[k]))
                   for k in args)
    self.assertAlmostEqual(numeric, analytic, delta=1e-3 * abs(analytic))
    del y, h_last

  def test_bf16_inputs(self):
    args, w, w_last = _setup("full", seed=5, bf16=True)
    y, h_last, grads = _values_and_grads(args, w, w_last, "pallas")
    self.assertEqual(y.dtype, jnp.bfloat16)
    self.assertEqual(h_last.dtype, jnp.float32)
    self.assertEqual(grads["u"].dtype, jnp.bfloat16)
    y_ref, h_ref = _np_ref(**{k: np.asarray(v, np.float32)
                              for k, v in args.items()})
    # y is rounded to bfloat16 (8 bits of mantissa); the fp32 state is not.
    np.testing.assert_allclose(np.asarray(y, np.float32), y_ref, rtol=1e-2,
                               atol=1e-2)
    np.testing.assert_allclose(h_last, h_ref, rtol=1e-5, atol=1e-5)
    _, _, want = _values_and_grads(args, w, w_last, "sequential")
    # Grads of bfloat16 inputs are rounded to bfloat16 by both.
    _assert_grads_close(grads, jax.tree.map(
        lambda x: np.asarray(x, np.float64), want), 1e-2)


def _is_big(aval, big):
  return (hasattr(aval, "shape")
          and np.prod(aval.shape) * aval.dtype.itemsize >= big // 4)


def _largest_avals(jaxpr, big):
  """Avals of at least big / 4 bytes anywhere in `jaxpr` (and sub-jaxprs)."""
  found = [v.aval for v in jaxpr.invars + jaxpr.outvars
           if _is_big(v.aval, big)]
  for eqn in jaxpr.eqns:
    found += [v.aval for v in eqn.outvars if _is_big(v.aval, big)]
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      found += _largest_avals(sub, big)
  return found


class PallasMemoryTest(absltest.TestCase):
  """Nothing of size [b, l, e, n] exists, forward or backward."""

  batch, length, d_inner, d_state, chunk = 1, 1024, 64, 64, 8
  big = batch * length * d_inner * d_state * 4  # one [b, l, e, n] fp32 array
  # A dozen [b, l, e] arrays, four [b, n, l] ones (B, C, dB, dC) and the
  # chunk-entry states [b, l / chunk + 1, n, e].
  bound = (12 * batch * length * d_inner * 4 + 4 * batch * length * d_state * 4
           + (length // chunk + 1) * batch * d_inner * d_state * 4)

  def _args(self):
    args = _inputs(self.batch, self.length, self.d_inner, self.d_state,
                   seed=14)
    return tuple(args[k] for k in ("u", "delta", "A_log", "B", "C", "D",
                                   "dt_bias", "z"))

  def _fn(self, u, delta, A_log, B, C, D, dt_bias, z):
    return selective_scan_lib.selective_scan(
        u, delta, A_log, B, C, D, dt_bias=dt_bias, z=z, impl="pallas",
        chunk_size=self.chunk)

  def test_residuals_are_o_of_b_l_e(self):
    self.assertGreater(self.big, 2 * self.bound)
    sizes = _residual_bytes(self._fn, self._args())
    self.assertLess(max(sizes), self.big // 4)
    self.assertLess(sum(sizes), self.bound)

  def test_no_big_array_in_the_gradient_program(self):
    grad = jax.grad(lambda *a: jnp.sum(self._fn(*a)), argnums=(0, 1, 2, 3, 4))
    jaxpr = jax.make_jaxpr(grad)(*self._args()).jaxpr
    self.assertEqual(_largest_avals(jaxpr, self.big), [])
    # The check sees inside the kernels: the naive port fails it.
    naive = jax.make_jaxpr(lambda *a: selective_scan_lib.selective_scan_naive(
        *a[:6], dt_bias=a[6], z=a[7]))(*self._args()).jaxpr
    self.assertNotEmpty(_largest_avals(naive, self.big))

  def test_grad_temp_memory_is_bounded(self):
    grad = jax.grad(lambda *a: jnp.sum(self._fn(*a)), argnums=(0, 1, 2, 3, 4))
    compiled = jax.jit(grad).lower(*self._args()).compile()
    self.assertLess(compiled.memory_analysis().temp_size_in_bytes, self.bound)


def _target_device(platform):
  """Names an H200 as the Triton target where jax needs one without a GPU.

  From jax 0.11 on, Triton lowering asks the default device for its compute
  capability and, on a machine without a GPU, wants an abstract GPU device
  named by the ambient abstract mesh instead; jax 0.10 lowers without one.
  """
  if platform != "gpu" or not hasattr(jax.sharding, "AbstractDevice"):
    return contextlib.nullcontext()
  device = jax.sharding.AbstractDevice(
      device_kind="NVIDIA H200", num_cores=None, platform="gpu")
  return jax.sharding.use_abstract_mesh(
      jax.sharding.AbstractMesh((1,), ("x",), abstract_device=device))


class PallasLoweringTest(parameterized.TestCase):
  """The GPU (Triton) and TPU (Mosaic) variants lower on a CPU-only machine.

  `jax.export` runs the Pallas lowering for the named platform, so a kernel
  that Triton or Mosaic lowering rejects (shapes, unsupported ops) fails
  here; compiling the lowered kernel needs the device and is not tested.
  """

  @parameterized.parameters(("gpu", "cuda", "__gpu$xla.gpu.triton"),
                            ("tpu", "tpu", "tpu_custom_call"))
  def test_forward_and_backward_lower(self, platform, export_platform,
                                      target):
    b, l, e, n = 2, 37, 160, 5  # ragged time, channel tiles and states

    def loss(u, delta, A_log, B, C, D, dt_bias, z, h0):
      y, h_last = pallas_lib.selective_scan_pallas(
          u, delta, A_log, B, C, D, dt_bias=dt_bias, z=z, h0=h0,
          platform=platform)
      return jnp.sum(y.astype(jnp.float32)) + jnp.sum(h_last)

    spec = jax.ShapeDtypeStruct
    bf16, f32 = jnp.bfloat16, jnp.float32
    args = (spec((b, l, e), bf16), spec((b, l, e), bf16), spec((e, n), f32),
            spec((b, l, n), bf16), spec((b, l, n), bf16), spec((e,), f32),
            spec((e,), f32), spec((b, l, e), bf16), spec((b, e, n), f32))
    with _target_device(platform):
      exported = jax.export.export(
          jax.jit(jax.grad(loss, argnums=tuple(range(9)))),
          platforms=(export_platform,),
          # Triton calls carry no serialisation-compatibility guarantee; this
          # test only lowers, it never deserialises.
          disabled_checks=[jax.export.DisabledSafetyCheck.custom_call(target)],
      )(*args)
    # One forward and one backward kernel.
    self.assertEqual(exported.mlir_module().count(target + "("), 2)


class PallasErrorsTest(parameterized.TestCase):

  def _call(self, **kwargs):
    args = _inputs()
    return pallas_lib.selective_scan_pallas(
        args["u"], args["delta"], args["A_log"], args["B"], args["C"],
        args["D"], dt_bias=args["dt_bias"], **kwargs)

  @parameterized.parameters(
      (dict(platform="cuda"), "platform must be one of"),
      (dict(platform="gpu", tile_e=24), "tile_e must be a power of 2"),
      (dict(platform="tpu", tile_e=64), "tile_e must be a multiple of 128"),
      (dict(chunk_size=0), "chunk_size must be a positive int, got 0"),
  )
  def test_bad_option(self, kwargs, message):
    with self.assertRaisesRegex(ValueError, message):
      self._call(**kwargs)

  def test_linear_scan_rejects_pallas(self):
    with self.assertRaisesRegex(ValueError, "impl 'pallas' is a selective"):
      scan_lib.linear_scan(jnp.ones((1, 3)), jnp.ones((1, 3)), impl="pallas")

  def test_selective_scan_checks_shapes_first(self):
    args = _inputs()
    with self.assertRaisesRegex(ValueError, r"B must have shape \(2, 7, 3\)"):
      selective_scan_lib.selective_scan(
          args["u"], args["delta"], args["A_log"], args["C"][:, :, :2],
          args["C"], args["D"], dt_bias=args["dt_bias"], impl="pallas")


if __name__ == "__main__":
  absltest.main()
