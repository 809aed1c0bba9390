"""The fused CPU selective scan: a C++ XLA FFI kernel, built on first use.

On CPU, XLA runs each step of a `lax.scan` as a dozen small kernels on one
[b, n, e] state, and their fixed cost (not arithmetic) dominates the Mamba
train step: ~0.5 ms per step of a D = 32 layer, ~1 ms at D = 128. The kernel
in `native/selective_scan_cpu.cc` runs a layer's whole recurrence (forward,
and the backward pass with chunked recomputation) in one call, one batch row
per task on XLA's intra-op thread pool.

Build: the first call compiles the source with the C++ compiler found as
$CXX, `c++` or `g++` (flags `COMPILE_FLAGS`, `-march=native`; without it if
the compiler refuses) against the headers of the installed jaxlib, into
$SSM_ICL_NATIVE_CACHE (default: ~/.cache/ssm_icl/native, or under
$XDG_CACHE_HOME), under a name that hashes the source, the flags, the
compiler, jaxlib's version and the CPU's model and features: nothing stale
is ever loaded, and a cache shared between machines holds one build per CPU.
Builds take ~10 s once; concurrent processes may build at the same time (each
writes a private file and renames it into place).

If the build fails (no compiler, no headers), `available()` is False with
`unavailable_reason()`; `selective_scan(impl="auto")` then falls back to the
XLA scan (and logs why once), while `impl="native"` raises. Setting
SSM_ICL_NATIVE=0 disables the kernel.

Numerics: fp32 throughout; exp by range reduction and a polynomial
(relative error ~2e-7); per-row sums may be reassociated (vectorised), so
results match the XLA scan to ~1e-7 relative (tests allow 1e-5), not
bitwise. The kernel is
deterministic: the same inputs give the same bits on the same build.

Shape letters as in `selective_scan`: b batch, l length, e channels
(d_inner), n d_state.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.metadata
import os
import pathlib
import platform
import shutil
import subprocess
import tempfile

from absl import logging
import jax
from jax.experimental.custom_partitioning import custom_partitioning
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

_SOURCE = pathlib.Path(__file__).parent / "native" / "selective_scan_cpu.cc"
_FWD, _BWD = "ssm_icl_selective_scan_fwd", "ssm_icl_selective_scan_bwd"
_SYMBOLS = {_FWD: "SsmIclSelectiveScanFwd", _BWD: "SsmIclSelectiveScanBwd"}
# Vectorised reductions need reassociation; finite-math stays on (NaN and
# inf propagate as in XLA).
COMPILE_FLAGS = ("-O3", "-std=c++17", "-fPIC", "-shared", "-fno-math-errno",
                 "-fassociative-math", "-fno-signed-zeros",
                 "-fno-trapping-math")
_NATIVE_ARCH = "-march=native"
_COMPILE_TIMEOUT_S = 300


class NativeUnavailable(RuntimeError):
  """The native kernel could not be built or loaded (the message says why)."""


def cache_dir() -> pathlib.Path:
  """Where built kernels are kept ($SSM_ICL_NATIVE_CACHE or the user cache)."""
  if os.environ.get("SSM_ICL_NATIVE_CACHE"):
    return pathlib.Path(os.environ["SSM_ICL_NATIVE_CACHE"])
  base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
  return pathlib.Path(base) / "ssm_icl" / "native"


def _compiler() -> str:
  for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
    if name and shutil.which(name):
      return shutil.which(name)
  raise NativeUnavailable("no C++ compiler found ($CXX, c++, g++, clang++)")


def _cpu_signature() -> str:
  """The CPU's model and feature flags (a build uses -march=native)."""
  sig = platform.machine()
  try:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith(("model name", "flags", "Features")):
        sig += line
        if line.startswith(("flags", "Features")):
          break
  except OSError:
    sig += platform.processor()
  return sig


def _compile(cxx: str, include: str, out: pathlib.Path) -> None:
  """Compiles the source into `out` (atomically), with -march=native if able."""
  out.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".so.tmp")
  os.close(fd)
  errors = []
  try:
    for arch in ((_NATIVE_ARCH,), ()):
      cmd = [cxx, *COMPILE_FLAGS, *arch, "-I", include, str(_SOURCE),
             "-o", tmp]
      try:
        proc = subprocess.run(cmd, capture_output=True, text=True,
                              timeout=_COMPILE_TIMEOUT_S, check=False)
      except (OSError, subprocess.TimeoutExpired) as e:
        errors.append(str(e))
        continue
      if proc.returncode == 0:
        os.replace(tmp, out)
        return
      lines = proc.stderr.strip().splitlines()
      errors.append(lines[-1] if lines else f"exit status {proc.returncode}")
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  raise NativeUnavailable(f"compiling {_SOURCE.name} with {cxx} failed: "
                          f"{errors[-1]}")


def library_path() -> pathlib.Path:
  """Builds the kernel if its cache entry is missing; returns the .so path."""
  include = jax.ffi.include_dir()
  if not os.path.exists(os.path.join(include, "xla", "ffi", "api", "ffi.h")):
    raise NativeUnavailable(f"jaxlib has no FFI headers under {include}")
  cxx = _compiler()
  key = hashlib.sha256()
  for part in (_SOURCE.read_bytes(), " ".join(COMPILE_FLAGS).encode(),
               cxx.encode(), importlib.metadata.version("jaxlib").encode(),
               _cpu_signature().encode()):
    key.update(part)
  out = cache_dir() / f"selective_scan_cpu-{key.hexdigest()[:16]}.so"
  if not out.exists():
    logging.info("Building the native CPU selective scan into %s", out)
    _compile(cxx, include, out)
  return out


@functools.cache
def _load() -> str | None:
  """Builds and registers the kernel once; None, or why it is unavailable."""
  if os.environ.get("SSM_ICL_NATIVE", "1") == "0":
    return "disabled by SSM_ICL_NATIVE=0"
  try:
    lib = ctypes.CDLL(str(library_path()))
  except (NativeUnavailable, OSError) as e:
    return str(e)
  for target, symbol in _SYMBOLS.items():
    jax.ffi.register_ffi_target(
        target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
    # Every operand has the batch leading: XLA may split calls by batch.
    jax.ffi.register_ffi_target_as_batch_partitionable(target)
  return None


def available() -> bool:
  """Whether the native kernel is built and registered (builds it if not)."""
  return _load() is None


def unavailable_reason() -> str | None:
  """None if `available()`, else why not (one line)."""
  return _load()


def _call(target, results, *args, chunk):
  # No vmap_method: `_batched` gives the ops their own vmap rule.
  return jax.ffi.ffi_call(target, results)(*args, chunk=np.int64(chunk))


def _forward_call(A, h0, delta, du, B, C, chunk):
  """The forward kernel: (y, h_last, starts); A [n, e], the rest batched."""
  batch, length, e = delta.shape
  n = A.shape[0]
  f32 = jnp.float32
  return _call(
      _FWD,
      (jax.ShapeDtypeStruct((batch, length, e), f32),
       jax.ShapeDtypeStruct((batch, n, e), f32),
       jax.ShapeDtypeStruct((batch, -(-length // chunk), n, e), f32)),
      delta, du, jnp.broadcast_to(A, (batch, n, e)), B, C, h0, chunk=chunk)


def _backward_call(A, delta, du, B, C, starts, dy, dh_last, chunk):
  """The backward kernel: (d_delta, d_du, dA per row, dB, dC, dh0)."""
  a_rows = jnp.broadcast_to(A, dh_last.shape)
  return _call(
      _BWD,
      tuple(jax.ShapeDtypeStruct(x.shape, jnp.float32)
            for x in (delta, du, a_rows, B, C, dh_last)),
      delta, du, a_rows, B, C, starts, dy, dh_last, chunk=chunk)


def _split_by_batch(fn, rule, n_args):
  """`fn` as an op that a sharded `jit` runs per device on its own rows.

  `fn`'s argument 0 is A [n, e] (replicated), the others lead with the
  batch; `n_args` is their number (the chunk size follows, static). Custom
  calls are opaque to XLA's partitioners, which would gather the whole
  batch onto every device; this op keeps the batch sharding of argument 1,
  replicates every other axis and runs `fn` on the local rows (the kernel is
  independent per row).
  """
  op = custom_partitioning(fn, static_argnums=(n_args,))

  def shardings(mesh, arg_shapes, result_shape):
    spec = arg_shapes[1].sharding.spec
    batch_axes = spec[0] if len(spec) else None
    along = lambda ndim: NamedSharding(mesh, P(batch_axes,
                                               *[None] * (ndim - 1)))
    results = jax.tree.map(lambda r: along(len(r.shape)), result_shape)
    args = (NamedSharding(mesh, P()),) + tuple(
        along(len(a.shape)) for a in arg_shapes[1:])
    return args, results

  def infer(chunk, mesh, arg_shapes, result_shape):
    del chunk
    return shardings(mesh, arg_shapes, result_shape)[1]

  def partition(chunk, mesh, arg_shapes, result_shape):
    args, results = shardings(mesh, arg_shapes, result_shape)
    return mesh, lambda *a: fn(*a, chunk), results, args

  op.def_partition(partition=partition, infer_sharding_from_operands=infer,
                   sharding_rule=rule)
  return op


_FORWARD_OP = _split_by_batch(
    _forward_call, "n e, b n e, b l e, b l e, b l n, b l n -> "
    "b l e, b n e, b c n e", 6)
_BACKWARD_OP = _split_by_batch(
    _backward_call, "n e, b l e, b l e, b l n, b l n, b c n e, b l e, "
    "b n e -> b l e, b l e, b n e, b l n, b l n, b n e", 8)


@functools.cache
def _batched(op, chunk):
  """`op` at `chunk`, with a vmap rule: the kernel is independent per batch
  row, so vmapped axes fold into the batch (`custom_partitioning` has no
  batching rule of its own). A vmapped A (argument 0) maps sequentially.
  """
  @jax.custom_batching.custom_vmap
  def fn(*args):
    return op(*args, chunk)

  @fn.def_vmap
  def rule(axis_size, in_batched, A, *rest):
    rest = [x if b else jnp.broadcast_to(x, (axis_size,) + x.shape)
            for x, b in zip(rest, in_batched[1:])]
    if in_batched[0]:  # One A per vmapped entry: one call per entry.
      out = jax.lax.map(lambda a: fn(*a), (A, *rest))
    else:
      batch = rest[0].shape[1]
      out = fn(A, *[x.reshape((axis_size * batch,) + x.shape[2:])
                    for x in rest])
      out = [o.reshape((axis_size, batch) + o.shape[1:]) for o in out]
    out = tuple(out)
    return out, (True,) * len(out)

  return fn


@functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
def _scan(A, h0, delta, du, B, C, chunk):
  y, h_last, _ = _batched(_FORWARD_OP, chunk)(A, h0, delta, du, B, C)
  return y, h_last


def _scan_fwd(A, h0, delta, du, B, C, chunk):
  y, h_last, starts = _batched(_FORWARD_OP, chunk)(A, h0, delta, du, B, C)
  return (y, h_last), (A, delta, du, B, C, starts)


def _scan_bwd(chunk, res, cotangents):
  A, delta, du, B, C, starts = res
  dy, dh_last = cotangents
  d_delta, d_du, dA_rows, dB, dC, dh0 = _batched(_BACKWARD_OP, chunk)(
      A, delta, du, B, C, starts, dy.astype(jnp.float32),
      dh_last.astype(jnp.float32))
  return dA_rows.sum(0), dh0, d_delta, d_du, dB, dC


_scan.defvjp(_scan_fwd, _scan_bwd)


def selective_scan_native(
    A: jax.Array, h0: jax.Array, delta: jax.Array, du: jax.Array,
    B: jax.Array, C: jax.Array, chunk_size: int,
) -> tuple[jax.Array, jax.Array]:
  """The discretised recurrence, run by the native kernel (reverse-mode AD).

  h_t = exp(delta_t A) h_{t-1} + du_t B_t;  y_t = <h_t, C_t> (per channel).

  Args:
    A: [n, e] fp32, A transposed (negative).
    h0: [b, n, e] fp32 initial state.
    delta: [b, l, e] fp32 step sizes (after softplus).
    du: [b, l, e] fp32 delta * u.
    B, C: [b, l, n] fp32.
    chunk_size: steps between the states saved for the backward pass (it
      recomputes one chunk at a time).

  Returns:
    y [b, l, e] fp32 and the final state [b, n, e] fp32.

  Raises:
    NativeUnavailable: if the kernel cannot be built or loaded here.
  """
  reason = _load()
  if reason is not None:
    raise NativeUnavailable(reason)
  f32 = jnp.float32
  return _scan(A.astype(f32), h0.astype(f32), delta.astype(f32),
               du.astype(f32), B.astype(f32), C.astype(f32), int(chunk_size))
