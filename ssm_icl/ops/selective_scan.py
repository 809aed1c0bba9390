"""Mamba v1 selective scan (S6) with `selective_scan_ref` semantics.

For each channel e and state n (official `mamba_ssm` `selective_scan_ref`):

  delta = softplus(delta + dt_bias)            # fp32, [b, l, e]
  A = -exp(A_log)                              # fp32, [e, n]
  h_t = exp(delta_t * A) * h_{t-1} + (delta_t * u_t) B_t  # ZOH A, Euler B
  y_t = <h_t, C_t> + D * u_t;   y *= silu(z) if z is given

The naive implementation materialises exp(delta * A) and (delta * u) B as
[b, l, e, n] tensors; autodiff then keeps them (and every level of an
associative scan) alive until the backward pass: ~26 GB for one layer at
b=64, l=2048, e=256. Every schedule here avoids that:

* SEQUENTIAL: `lax.scan` over time whose body discretises one step and
  contracts with C_t, so no [b, l, e, n] tensor is ever formed. The time axis
  is split into chunks and a `jax.custom_vjp` saves only the chunk-entry
  states [c, b, n, e]; its backward pass recomputes one chunk of states at a
  time and runs the reverse recurrence with every reduction inside the loop
  (measured ~1.5x less CPU time than autodiff of `jax.checkpoint`-ed
  chunks).
  The fastest schedule on CPU; it supports reverse mode only (no `jax.jvp`).
* ASSOCIATIVE: materialise and `lax.associative_scan`, inside `jax.checkpoint`
  so only the O(b l e) inputs are saved (the backward pass rebuilds the big
  tensors transiently).
* CHUNKED: `lax.scan` over `jax.checkpoint`-ed chunks; each chunk
  materialises its [t, b, n, e] tensors, runs an associative (GPU/TPU) or
  sequential (CPU) scan on them and contracts with C inside the chunk.
* NATIVE: the fused C++ kernel of `native_scan` (CPU only; same algorithm as
  SEQUENTIAL, one call per layer instead of a dozen XLA kernels per step).
  What AUTO picks on CPU when the kernel builds; else AUTO is SEQUENTIAL.
* PALLAS: the fused kernels of `selective_scan_pallas` (interpret mode on
  CPU); never picked by AUTO, as no GPU/TPU measurement exists yet.

Shape letters: b batch, l length, e d_inner (channels), n d_state, c number
of chunks, t steps per chunk.
"""

from __future__ import annotations

import functools

from absl import logging
import jax
from jax import lax
import jax.numpy as jnp

from ssm_icl.ops import native_scan
from ssm_icl.ops import scan as scan_lib
from ssm_icl.ops import selective_scan_pallas

ScanImpl = scan_lib.ScanImpl
_F32 = jnp.float32

# Steps per chunk, by schedule; only chunk-entry states are saved for the
# backward pass. Chosen by measurement (benchmarks/scan_bench.py, b=64,
# e=256, n=16). On a 2-core CPU, SEQUENTIAL with 8-step chunks had a 1.3x
# faster gradient than 16 steps at l=82, while at l=2048 8, 16 and 32 steps
# took the same time and 16 steps needed 850 MB instead of 973 MB. On an
# H100, CHUNKED with 16 steps was as fast as 64-256 with the least memory.
DEFAULT_CHUNK_SIZE = {
    ScanImpl.SEQUENTIAL: 8,
    # The native kernel recomputes each chunk's states into a per-row
    # scratch of 2 * chunk states; 8 steps keep it in L2 at e = 256, n = 16.
    ScanImpl.NATIVE: 8,
    ScanImpl.CHUNKED: 16,
}
# Beyond this length SEQUENTIAL defaults to twice as long chunks.
LONG_SEQUENCE = 1024


def default_chunk_size(impl: ScanImpl, length: int) -> int:
  """The default chunk of `impl` (SEQUENTIAL or CHUNKED) for `length`."""
  chunk = DEFAULT_CHUNK_SIZE[impl]
  if impl is ScanImpl.SEQUENTIAL and length > LONG_SEQUENCE:
    chunk *= 2
  return chunk


def _check_shapes(u, delta, A_log, B, C, D, dt_bias, z, h0):
  """Raises ValueError naming the first input whose shape is inconsistent."""
  if u.ndim != 3:
    raise ValueError(f"u must be [batch, length, d_inner], got shape "
                     f"{u.shape}.")
  batch, length, d_inner = u.shape
  if A_log.ndim != 2 or A_log.shape[0] != d_inner:
    raise ValueError(f"A_log must be [d_inner={d_inner}, d_state], got shape "
                     f"{A_log.shape}.")
  d_state = A_log.shape[1]
  expected = {
      "delta": (delta, (batch, length, d_inner)),
      "B": (B, (batch, length, d_state)),
      "C": (C, (batch, length, d_state)),
      "D": (D, (d_inner,)),
      "dt_bias": (dt_bias, (d_inner,)),
      "z": (z, (batch, length, d_inner)),
      "h0": (h0, (batch, d_inner, d_state)),
  }
  for name, (x, shape) in expected.items():
    if x is not None and tuple(jnp.shape(x)) != shape:
      raise ValueError(f"{name} must have shape {shape} (u is {u.shape}, "
                       f"A_log is {A_log.shape}), got {tuple(jnp.shape(x))}.")


def _discretise_inputs(u, delta, A_log, dt_bias):
  """fp32 delta = softplus(delta + dt_bias), delta * u, and A = -exp(A_log)."""
  delta = delta.astype(_F32)
  if dt_bias is not None:
    delta = delta + dt_bias.astype(_F32)
  delta = jax.nn.softplus(delta)  # [b, l, e]
  A = -jnp.exp(A_log.astype(_F32))  # [e, n]
  return delta, delta * u.astype(_F32), A


def _finish(y, u, D, z):
  """y + D * u, times silu(z); all fp32, cast to u's dtype."""
  if D is not None:
    y = y + D.astype(_F32) * u.astype(_F32)
  if z is not None:
    y = y * jax.nn.silu(z.astype(_F32))
  return y.astype(u.dtype)


def _fused_steps(A, h, xs):
  """Sequential scan over one chunk, discretising inside the loop body.

  The state is laid out [b, n, e] so that the contraction with C_t and the
  reductions of the backward pass run over a major axis (vector adds along
  the contiguous e axis), which measured faster on CPU than [b, e, n].

  Args:
    A: [n, e] fp32 (A transposed).
    h: [b, n, e] fp32 state entering the chunk.
    xs: (delta [t, b, e], delta * u [t, b, e], B [t, b, n], C [t, b, n]).

  Returns:
    The state leaving the chunk [b, n, e] and y [t, b, e] (no D, no gate).
  """
  def step(h, x):
    delta_t, du_t, B_t, C_t = x
    # exp(delta * A) is in (0, 1] since A < 0 and delta > 0.
    h = (jnp.exp(delta_t[:, None, :] * A) * h
         + du_t[:, None, :] * B_t[:, :, None])  # [b, n, e]
    return h, jnp.sum(h * C_t[:, :, None], axis=1)  # [b, e]

  return lax.scan(step, h, xs)


@jax.custom_vjp
def _fused_scan(A, h0, delta, du, B, C):
  """Chunked fused scan with a hand-written, memory-lean backward pass.

  Args:
    A: [n, e] fp32.
    h0: [b, n, e] fp32.
    delta, du: [c, t, b, e] fp32 chunked time-major inputs.
    B, C: [c, t, b, n] fp32.

  Returns:
    y [c, t, b, e] fp32 and the final state [b, n, e] fp32.
  """
  def chunk(h, xs):
    return _fused_steps(A, h, xs)

  h_last, y = lax.scan(chunk, h0, (delta, du, B, C))
  return y, h_last


def _fused_scan_fwd(A, h0, delta, du, B, C):
  """Forward pass that saves the inputs and the chunk-entry states only."""
  def chunk(h, xs):
    h_end, y = _fused_steps(A, h, xs)
    return h_end, (y, h)

  h_last, (y, starts) = lax.scan(chunk, h0, (delta, du, B, C))
  return (y, h_last), (A, delta, du, B, C, starts)  # starts: [c, b, n, e]


def _fused_scan_bwd(res, cotangents):
  """Backward pass: per chunk (last first), recompute states, reverse scan.

  With g_t = dL/dh_t (including the path through later states):
    g_t = C_t dy_t + a_{t+1} g_{t+1},  a_t = exp(delta_t A),
    dL/d(delta_t A) = g_t h_{t-1} a_t,   dL/d(du_t B_t) = g_t,
    dL/dC_t = sum_e h_t dy_t.
  Only one chunk of states [t, b, n, e] is alive at a time; all reductions
  happen inside the loops, so nothing of size [l, b, n, e] is written.
  """
  A, delta, du, B, C, starts = res
  dy, dh_last = cotangents

  def chunk(carry, xs):
    delta_c, du_c, B_c, C_c, dy_c, h_start = xs

    def recompute(h, x):
      delta_t, du_t, B_t, dy_t = x
      h_prev = h
      h = (jnp.exp(delta_t[:, None, :] * A) * h
           + du_t[:, None, :] * B_t[:, :, None])
      return h, (h_prev, jnp.sum(h * dy_t[:, None, :], axis=2))

    _, (h_prev, dC) = lax.scan(recompute, h_start,
                               (delta_c, du_c, B_c, dy_c))

    def reverse_step(carry, x):
      g, dA = carry
      delta_t, du_t, B_t, C_t, dy_t, h_prev_t = x
      a = jnp.exp(delta_t[:, None, :] * A)  # [b, n, e]
      g = g + C_t[:, :, None] * dy_t[:, None, :]
      g_log_a = g * h_prev_t * a  # dL/d(delta_t A)
      d_delta = jnp.sum(g_log_a * A, axis=1)  # [b, e]
      dA = dA + jnp.sum(g_log_a * delta_t[:, None, :], axis=0)  # [n, e]
      d_du = jnp.sum(g * B_t[:, :, None], axis=1)  # [b, e]
      dB = jnp.sum(g * du_t[:, None, :], axis=2)  # [b, n]
      return (g * a, dA), (d_delta, d_du, dB)

    carry, grads = lax.scan(reverse_step, carry,
                            (delta_c, du_c, B_c, C_c, dy_c, h_prev),
                            reverse=True)
    return carry, grads + (dC,)

  (dh0, dA), (d_delta, d_du, dB, dC) = lax.scan(
      chunk, (dh_last, jnp.zeros_like(A)), (delta, du, B, C, dy, starts),
      reverse=True)
  return dA, dh0, d_delta, d_du, dB, dC


_fused_scan.defvjp(_fused_scan_fwd, _fused_scan_bwd)


def _materialised_chunk(A, h, xs, inner):
  """One chunk with its [t, b, n, e] tensors materialised; as `_fused_steps`.

  Autodiff differentiates this (under the chunk's `jax.checkpoint`).
  """
  delta, du, B, C = xs
  dA = jnp.exp(delta[:, :, None, :] * A)  # [t, b, n, e]
  dBu = du[:, :, None, :] * B[..., None]  # [t, b, n, e]
  hs, h_end = inner(dA, dBu, h)
  return h_end, jnp.einsum("tbne,tbn->tbe", hs, C)


def _to_chunks(xs, chunk_size):
  """Time-major [l, b, ...] arrays -> [c, t, b, ...] padded with zeros.

  Zero padding of delta and delta * u gives a = exp(0) = 1 and b = 0, so padded
  steps carry the state unchanged; their outputs are dropped.
  """
  length = xs[0].shape[0]
  num_chunks = -(-length // chunk_size)
  padded = num_chunks * chunk_size
  return tuple(
      scan_lib.pad_time(x, padded, 0.0).reshape(
          (num_chunks, chunk_size) + x.shape[1:]) for x in xs)


def _from_chunks(y, length):
  """[c, t, b, ...] -> [length, b, ...]."""
  return y.reshape((-1,) + y.shape[2:])[:length]


def _resolve(impl: ScanImpl | str) -> ScanImpl:
  """`scan_lib.resolve_impl`, plus: AUTO on CPU is NATIVE where it builds.

  Where the native kernel cannot be built, AUTO keeps the XLA scan
  (SEQUENTIAL) and logs why, once; an explicit NATIVE raises.
  """
  requested = scan_lib.parse_impl(impl)
  impl = scan_lib.resolve_impl(requested)
  if requested is ScanImpl.AUTO and impl is ScanImpl.SEQUENTIAL:
    reason = native_scan.unavailable_reason()
    if reason is None:
      return ScanImpl.NATIVE
    logging.log_first_n(logging.WARNING, "Native CPU selective scan "
                        "unavailable (%s); using the XLA scan.", 1, reason)
  elif impl is ScanImpl.NATIVE:
    if jax.default_backend() != "cpu":
      raise ValueError(f"impl 'native' is the CPU kernel; the default backend "
                       f"is {jax.default_backend()!r} (use 'auto').")
    reason = native_scan.unavailable_reason()
    if reason is not None:
      raise native_scan.NativeUnavailable(
          f"impl 'native' is unavailable here: {reason}")
  return impl


def selective_scan(
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
    impl: ScanImpl | str = "auto",
    chunk_size: int | None = None,
    return_last_state: bool = False,
    inner_impl: ScanImpl | str | None = None,
) -> jax.Array | tuple[jax.Array, jax.Array]:
  """The S6 selective scan of Mamba v1 (`selective_scan_ref` semantics).

  Differentiable in reverse mode with every schedule; NATIVE and SEQUENTIAL
  (the CPU schedules) have custom VJPs, so they do not support forward mode
  (`jax.jvp`).

  Args:
    u: [b, l, e] input.
    delta: [b, l, e] pre-softplus step sizes (dt_proj output without bias).
    A_log: [e, n]; A = -exp(A_log).
    B: [b, l, n] input projection.
    C: [b, l, n] output projection.
    D: optional [e] skip weight.
    dt_bias: optional [e] added to delta before the softplus.
    z: optional [b, l, e] gate; the output is multiplied by silu(z).
    h0: optional [b, e, n] initial state.
    impl: a `ScanImpl` or its string value; AUTO resolves by platform.
    chunk_size: steps per chunk for SEQUENTIAL, CHUNKED and PALLAS (None:
      `default_chunk_size`, or the kernel's platform default); the backward
      pass saves one state per chunk. Ignored by ASSOCIATIVE.
    return_last_state: also return the final state.
    inner_impl: the scan inside a CHUNKED chunk, "associative" or
      "sequential"; None or "auto" picks sequential on CPU, associative
      elsewhere.

  Returns:
    y [b, l, e] in u's dtype, and, if `return_last_state`, the final state
    [b, e, n] in float32.

  Raises:
    ValueError: on inconsistent shapes or unknown impls.
  """
  impl = _resolve(impl)
  inner = scan_lib.parse_impl(
      ScanImpl.AUTO if inner_impl is None else inner_impl, "inner_impl")
  if inner is ScanImpl.AUTO:
    # On CPU the loop is cheapest; elsewhere use the parallel scan.
    inner = (ScanImpl.SEQUENTIAL if jax.default_backend() == "cpu"
             else ScanImpl.ASSOCIATIVE)
  if inner is ScanImpl.CHUNKED:
    raise ValueError(f"inner_impl must be 'associative' or 'sequential', "
                     f"got {inner_impl!r}.")
  _check_shapes(u, delta, A_log, B, C, D, dt_bias, z, h0)
  if impl is ScanImpl.PALLAS:
    y, h_last = selective_scan_pallas.selective_scan_pallas(
        u, delta, A_log, B, C, D, dt_bias=dt_bias, z=z, h0=h0,
        chunk_size=chunk_size)
    return (y, h_last) if return_last_state else y
  if chunk_size is None and impl is not ScanImpl.ASSOCIATIVE:
    chunk_size = default_chunk_size(impl, u.shape[1])
  if chunk_size is not None:
    scan_lib.check_chunk_size(chunk_size)

  delta, du, A = _discretise_inputs(u, delta, A_log, dt_bias)
  batch, _, d_inner = u.shape
  if h0 is None:
    h0 = jnp.zeros((batch, d_inner, A.shape[1]), _F32)
  h0 = h0.astype(_F32)

  if impl is ScanImpl.ASSOCIATIVE:
    y, h_last = _associative(delta, du, A, B.astype(_F32), C.astype(_F32), h0)
  elif impl is ScanImpl.NATIVE:
    # Batch-major as given: the kernel needs no time-major copies.
    y, h_last = native_scan.selective_scan_native(
        A.T, jnp.swapaxes(h0, 1, 2), delta, du, B, C,
        min(chunk_size, u.shape[1]))
    h_last = jnp.swapaxes(h_last, 1, 2)  # [b, e, n]
  else:
    length = u.shape[1]
    chunk_size = min(chunk_size, length)
    # Chunked time-major copies of the O(b l e) inputs for lax.scan.
    xs = _to_chunks(
        tuple(jnp.swapaxes(x.astype(_F32), 0, 1) for x in (delta, du, B, C)),
        chunk_size)
    A_t = A.T  # [n, e]
    h0 = jnp.swapaxes(h0, 1, 2)  # [b, n, e]
    if impl is ScanImpl.SEQUENTIAL:
      y, h_last = _fused_scan(A_t, h0, *xs)
    else:
      inner_fn = (scan_lib.sequential_time_major if inner is
                  ScanImpl.SEQUENTIAL else scan_lib.associative_time_major)
      chunk_fn = jax.checkpoint(
          functools.partial(_materialised_chunk, A_t, inner=inner_fn))
      h_last, y = lax.scan(chunk_fn, h0, xs)
    y = jnp.swapaxes(_from_chunks(y, length), 0, 1)  # [b, l, e]
    h_last = jnp.swapaxes(h_last, 1, 2)  # [b, e, n]

  y = _finish(y, u, D, z)
  return (y, h_last) if return_last_state else y


@jax.checkpoint
def _associative(delta, du, A, B, C, h0):
  """Materialised associative scan; checkpointed so only inputs are saved.

  Args:
    delta, du: [b, l, e] fp32.
    A: [e, n] fp32.
    B, C: [b, l, n] fp32.
    h0: [b, e, n] fp32.

  Returns:
    y [b, l, e] fp32 (no D, no gate) and the final state [b, e, n].
  """
  dA = jnp.exp(delta[..., None] * A)  # [b, l, e, n]
  dBu = du[..., None] * B[:, :, None, :]  # [b, l, e, n]
  dBu = dBu.at[:, 0].add(dA[:, 0] * h0)
  _, h = lax.associative_scan(scan_lib.combine, (dA, dBu), axis=1)
  return jnp.einsum("blen,bln->ble", h, C), h[:, -1]


def selective_scan_naive(
    u: jax.Array,
    delta: jax.Array,
    A_log: jax.Array,
    B: jax.Array,
    C: jax.Array,
    D: jax.Array | None,
    *,
    dt_bias: jax.Array | None,
    z: jax.Array | None = None,
) -> jax.Array:
  """The naive port: materialise dA, dBu [b, l, e, n], associative scan.

  No rematerialisation, so autodiff keeps the [b, l, e, n] tensors and every
  level of the scan. This is what straightforward JAX ports do; it is the
  benchmark baseline, not for training.

  Args:
    u, delta, z: [b, l, e]; A_log: [e, n]; B, C: [b, l, n]; D, dt_bias: [e].

  Returns:
    y [b, l, e] in u's dtype.
  """
  _check_shapes(u, delta, A_log, B, C, D, dt_bias, z, None)
  delta, du, A = _discretise_inputs(u, delta, A_log, dt_bias)
  dA = jnp.exp(delta[..., None] * A)  # [b, l, e, n]
  dBu = du[..., None] * B.astype(_F32)[:, :, None, :]  # [b, l, e, n]
  _, h = lax.associative_scan(scan_lib.combine, (dA, dBu), axis=1)
  y = jnp.einsum("blen,bln->ble", h, C.astype(_F32))
  return _finish(y, u, D, z)
