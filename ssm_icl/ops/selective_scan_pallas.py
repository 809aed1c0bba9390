"""Fused Pallas selective scan (`ScanImpl.PALLAS`) for GPU, TPU and CPU.

Same semantics as `selective_scan.selective_scan` (`selective_scan_ref`):
delta = softplus(delta + dt_bias), A = -exp(A_log), ZOH on A, Euler on B,
y = <h_t, C_t> + D u, gated by silu(z). One kernel body
(`selective_scan_kernels`) serves every platform; the platforms differ only
in tiling and lowering:

  platform  lowering          tile_e  chunk  state axis padded to
  gpu       Triton            32      8      a power of 2 (Triton shapes)
  tpu       Mosaic            128     8      a multiple of 8 (sublanes)
  cpu       Pallas interpret  128     16     - (no constraint)

The forward pass keeps only the states entering each `chunk` steps
([b, l / chunk, n, e], as SEQUENTIAL does); the backward kernel recomputes
each chunk from them, so nothing of size [b, l, e, n] is ever written. A
`jax.custom_vjp` ties the two kernels together. The tile sizes are untuned:
the kernels have not been run on a GPU or TPU yet (see README).

Raggedness is handled by padding outside the kernels: channels with zeros
(u = 0 keeps their state at zero), the state axis with A_log = B = C = 0, and
time with delta = _PAD_DELTA, for which softplus(delta + dt_bias) and its
derivative are exactly 0, so padded steps leave the state unchanged and
contribute nothing to any gradient.

Known limits (untested on devices): the TPU variant keeps whole-sequence
blocks in VMEM (u, delta, z, y and, backward, their grads: [l, 128] each),
which bounds L; and XLA does not partition the kernel's custom call, so
under a multi-device jit the batch would be gathered onto each device
(running it per device needs a `jax.shard_map` over the batch, not done).

Shape letters: b batch, l length, e d_inner, n d_state, c chunks.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu
from jax.experimental.pallas import triton as pltriton
import jax.numpy as jnp

from ssm_icl.ops import selective_scan_kernels as kernels

_F32 = jnp.float32
PLATFORMS = ("cpu", "gpu", "tpu")
# (tile_e, chunk) per platform; see the module docstring.
DEFAULTS = {"gpu": (32, 8), "tpu": (128, 8), "cpu": (128, 16)}
# Far below -104, where softplus and sigmoid are 0 in float32; stays finite
# in bfloat16 (and becomes -inf in float16, which is just as exact).
_PAD_DELTA = -1e30


@dataclasses.dataclass(frozen=True)
class KernelConfig:
  """Static shape and lowering parameters of one kernel call."""
  platform: str
  interpret: bool
  tile_e: int
  chunk: int
  num_chunks: int
  has_z: bool

  @property
  def compiler_params(self):
    if self.interpret or self.platform == "cpu":
      return None
    if self.platform == "gpu":
      return pltriton.CompilerParams(num_warps=4, num_stages=1)
    # Every (batch, tile) program is independent; TPU megacore may split
    # either axis across cores.
    return pltpu.CompilerParams(dimension_semantics=("parallel", "parallel"))


def _round_up(x: int, multiple: int) -> int:
  return -(-x // multiple) * multiple


def _padded_state(platform: str, d_state: int) -> int:
  if platform == "gpu":
    return pl.next_power_of_2(d_state)
  if platform == "tpu":
    return _round_up(d_state, 8)
  return d_state


def _tile(platform: str, d_inner: int, tile_e: int | None) -> int:
  """The channel tile: a power of 2 on GPU, 128 or all channels on TPU."""
  tile = DEFAULTS[platform][0] if tile_e is None else tile_e
  if platform == "gpu":
    if tile & (tile - 1):
      raise ValueError(f"tile_e must be a power of 2 on GPU (Triton), got "
                       f"{tile}.")
    return min(tile, pl.next_power_of_2(d_inner))
  if platform == "tpu":
    if tile % 128:
      raise ValueError(f"tile_e must be a multiple of 128 on TPU (lanes), "
                       f"got {tile}.")
    return tile if d_inner > tile else d_inner
  return min(tile, d_inner)


def _specs(cfg: KernelConfig, n_state: int, length: int):
  """BlockSpecs by kind of operand; the grid is (batch, channel tiles)."""
  te, c = cfg.tile_e, cfg.num_chunks
  return dict(
      row=pl.BlockSpec((None, length, cfg.tile_e), lambda i, j: (i, 0, j)),
      col=pl.BlockSpec((None, n_state, length), lambda i, j: (i, 0, 0)),
      col_part=pl.BlockSpec((None, None, n_state, length),
                            lambda i, j: (i, j, 0, 0)),
      state=pl.BlockSpec((None, n_state, te), lambda i, j: (i, 0, j)),
      states=pl.BlockSpec((None, c + 1, n_state, te),
                          lambda i, j: (i, 0, 0, j)),
      a_log=pl.BlockSpec((n_state, te), lambda i, j: (0, j)),
      vec=pl.BlockSpec((1, te), lambda i, j: (0, j)),
      vec_part=pl.BlockSpec((None, 1, te), lambda i, j: (i, 0, j)),
  )


def _call(cfg, body, in_kinds, out_kinds, out_shape, args):
  batch, length, d_inner = args[0].shape
  n_state = args[in_kinds.index("a_log")].shape[0]
  specs = _specs(cfg, n_state, length)
  return pl.pallas_call(
      functools.partial(body, chunk=cfg.chunk, num_chunks=cfg.num_chunks,
                        has_z=cfg.has_z),
      out_shape=out_shape,
      grid=(batch, d_inner // cfg.tile_e),
      in_specs=[specs[k] for k in in_kinds],
      out_specs=[specs[k] for k in out_kinds],
      interpret=cfg.interpret,
      compiler_params=cfg.compiler_params,
      name="selective_scan_" + body.__name__,
  )(*args)


def _in_kinds(has_z):
  return (("row", "row") + (("row",) if has_z else ())
          + ("col", "col", "a_log", "vec", "vec"))


def _forward(cfg, u, delta, z, b, c, a_log, d, bias, h0):
  """y [b, lp, ep] in u's dtype and states [b, c + 1, np, ep] float32."""
  batch, length, d_inner = u.shape
  n_state = a_log.shape[0]
  args = (u, delta) + ((z,) if cfg.has_z else ()) + (b, c, a_log, d, bias,
                                                      h0)
  return _call(
      cfg, kernels.forward_kernel, _in_kinds(cfg.has_z) + ("state",),
      ("row", "states"),
      (jax.ShapeDtypeStruct(u.shape, u.dtype),
       jax.ShapeDtypeStruct((batch, cfg.num_chunks + 1, n_state, d_inner),
                            _F32)),
      args)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _fused(cfg, u, delta, z, b, c, a_log, d, bias, h0):
  """The padded scan: y [b, lp, ep] and the final state [b, np, ep]."""
  y, states = _forward(cfg, u, delta, z, b, c, a_log, d, bias, h0)
  return y, states[:, -1]


def _fused_fwd(cfg, u, delta, z, b, c, a_log, d, bias, h0):
  y, states = _forward(cfg, u, delta, z, b, c, a_log, d, bias, h0)
  return (y, states[:, -1]), (u, delta, z, b, c, a_log, d, bias, states)


def _fused_bwd(cfg, res, cotangents):
  u, delta, z, b, c, a_log, d, bias, states = res
  dy, dh_last = cotangents
  batch, length, d_inner = u.shape
  n_state = a_log.shape[0]
  tiles = d_inner // cfg.tile_e
  row = jax.ShapeDtypeStruct(u.shape, _F32)
  col_part = jax.ShapeDtypeStruct((batch, tiles, n_state, length), _F32)
  state = jax.ShapeDtypeStruct((batch, n_state, d_inner), _F32)
  vec_part = jax.ShapeDtypeStruct((batch, 1, d_inner), _F32)
  z_args = (z,) if cfg.has_z else ()
  outs = _call(
      cfg, kernels.backward_kernel,
      _in_kinds(cfg.has_z) + ("states", "row", "state"),
      ("row", "row") + (("row",) if cfg.has_z else ())
      + ("col_part", "col_part", "state", "vec_part", "vec_part", "state"),
      (row, row) + ((row,) if cfg.has_z else ())
      + (col_part, col_part, state, vec_part, vec_part, state),
      (u, delta) + z_args + (b, c, a_log, d, bias, states, dy,
                             dh_last.astype(_F32)))
  du, ddelta = outs[:2]
  dz = outs[2].astype(z.dtype) if cfg.has_z else None
  db, dc, da_log, dd, dbias, dh0 = outs[2 + cfg.has_z:]
  # Per-tile and per-batch partial sums of the grads reduced over channels
  # (dB, dC) or over the batch (A_log, D, dt_bias).
  return (du.astype(u.dtype), ddelta.astype(delta.dtype), dz,
          db.sum(1).astype(b.dtype), dc.sum(1).astype(c.dtype),
          da_log.sum(0), dd.sum(0), dbias.sum(0), dh0)


_fused.defvjp(_fused_fwd, _fused_bwd)


def _pad(x, widths, value=0.0):
  if all(w == 0 for w in widths):
    return x
  return jnp.pad(x, [(0, w) for w in widths], constant_values=value)


def selective_scan_pallas(
    u: jax.Array,
    delta: jax.Array,
    A_log: jax.Array,
    B: jax.Array,
    C: jax.Array,
    D: jax.Array | None,
    *,
    dt_bias: jax.Array | None,
    z: jax.Array | None = None,
    h0: jax.Array | None = None,
    chunk_size: int | None = None,
    tile_e: int | None = None,
    platform: str | None = None,
    interpret: bool | None = None,
) -> tuple[jax.Array, jax.Array]:
  """The fused selective scan; shapes as `selective_scan.selective_scan`.

  `selective_scan(..., impl="pallas")` checks the shapes and calls this.

  Args:
    u, delta, z: [b, l, e] (float32 or bfloat16); z optional.
    A_log: [e, n]; B, C: [b, l, n]; D, dt_bias: optional [e].
    h0: optional [b, e, n] initial state.
    chunk_size: steps per chunk (one saved state per chunk); None: the
      platform default.
    tile_e: channels per program; None: the platform default.
    platform: "gpu", "tpu" or "cpu" variant (tiling and lowering); None:
      `jax.default_backend()`. Lets `jax.export` lower a variant on a machine
      without its device.
    interpret: run in Pallas interpret mode; None: only on CPU, where no
      Pallas lowering exists.

  Returns:
    y [b, l, e] in u's dtype and the final state [b, e, n] in float32.

  Raises:
    ValueError: on an unknown platform, bad tile_e or bad chunk_size.
  """
  platform = (platform or jax.default_backend()).lower()
  if platform not in PLATFORMS:
    raise ValueError(f"platform must be one of {PLATFORMS}, got "
                     f"{platform!r}.")
  if chunk_size is not None and (isinstance(chunk_size, bool) or not
                                 isinstance(chunk_size, int) or
                                 chunk_size < 1):
    raise ValueError(f"chunk_size must be a positive int, got "
                     f"{chunk_size!r}.")
  batch, length, d_inner = u.shape
  d_state = A_log.shape[1]
  te = _tile(platform, d_inner, tile_e)
  chunk = min(chunk_size or DEFAULTS[platform][1], length)
  num_chunks = -(-length // chunk)
  cfg = KernelConfig(
      platform=platform,
      interpret=platform == "cpu" if interpret is None else bool(interpret),
      tile_e=te, chunk=chunk, num_chunks=num_chunks, has_z=z is not None)

  n_pad = _padded_state(platform, d_state) - d_state
  e_pad = _round_up(d_inner, te) - d_inner
  l_pad = num_chunks * chunk - length
  if D is None:
    D = jnp.zeros((d_inner,), _F32)
  if dt_bias is None:
    dt_bias = jnp.zeros((d_inner,), _F32)
  if h0 is None:
    h0 = jnp.zeros((batch, d_inner, d_state), _F32)

  def rows(x, time_value=0.0):
    return _pad(_pad(x, (0, 0, e_pad)), (0, l_pad, 0), time_value)

  def cols(x):  # [b, l, n] -> [b, np, lp]
    return _pad(jnp.swapaxes(x, 1, 2), (0, n_pad, l_pad))

  y, h_last = _fused(
      cfg, rows(u), rows(delta, _PAD_DELTA),
      None if z is None else rows(z), cols(B), cols(C),
      _pad(A_log.astype(_F32).T, (n_pad, e_pad)),
      _pad(D.astype(_F32)[None], (0, e_pad)),
      _pad(dt_bias.astype(_F32)[None], (0, e_pad)),
      _pad(jnp.swapaxes(h0.astype(_F32), 1, 2), (0, n_pad, e_pad)))
  return y[:, :length, :d_inner], jnp.swapaxes(
      h_last[:, :d_state, :d_inner], 1, 2)
