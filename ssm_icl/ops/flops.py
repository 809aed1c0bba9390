"""Analytic parameter counts and FLOPs of the ICL models (docs/PAPER.md §6).

The paper compares models at matched FLOPs; this module gives the analytic
count for any block pattern, e.g. to put runs on a FLOPs axis:

  forward ~ 2 T P_matmul + attention + SSM + conv + elementwise

for one sequence of T tokens, where P_matmul is the weight count of every
matmul (read-in/out, projections; not position tables, norms, biases or the
SSM's elementwise parameters). The terms, per block:

  attn   QK^T and AV: 4 D per query-key pair; "full" counts all T^2 pairs
         (what a dense kernel computes before masking), "causal" the
         T (T + 1) / 2 visible ones (what a FlashAttention-style kernel
         computes); softmax and scaling ~5 FLOPs per pair and head.
  mamba  selective scan 6 T E N ("sequential" schedule: exp(delta A) * h,
         + delta u B, <h, C>); the "associative" schedule
         (`jax.lax.associative_scan`) does ~11 T E N, see
         `associative_scan_flops`; causal conv 2 K per output; ~19
         elementwise FLOPs per inner channel and token.
  s4d    kernel generation ~7 H M T (M = d_state / 2 modes) plus three real
         FFTs of length 2T at 2.5 n log2 n each and a complex product.
  all    LayerNorm ~8 D per token, biases, activations (silu 4, gelu 8,
         softplus 6, sigmoid 3 per element), residual adds.

Counting convention, as in XLA's cost analysis: a multiply-add is 2 FLOPs,
other arithmetic 1, and transcendentals (exp, log, tanh, ...) none. Training
FLOPs are 3x forward (backward ~ 2x forward); recomputation by remat or
checkpointing is an implementation cost and is not counted (the "model
FLOPs" convention of MFU). The count is exact for matmuls and parameters and
approximate for the elementwise terms; it agrees with XLA's count of the
lowered forward pass to <2% for attention, MLP and (associative) Mamba
models. XLA counts S4 models ~30% higher: it prices an FFT at 8 n log2 n and
the exact GELU as its erf polynomial.

The config is duck-typed (a `ssm_icl.models.ModelConfig` or anything with
its fields: `block_pattern`, `d_model`, `n_head`, `d_in`, `d_out`,
`n_positions`, `uses_positions`, `d_state`, `d_conv`, `expand`,
`resolved_dt_rank`, `mlp_ratio`), so `ops` does not import `models`.
"""

from __future__ import annotations

import math
from typing import Any

BLOCK_KINDS = ("attn", "mlp", "mamba", "s4d", "s4_mamba")
CATEGORIES = ("matmul", "attention", "ssm", "conv", "elementwise")
ATTENTION_MODES = ("full", "causal")
SCAN_SCHEDULES = ("sequential", "associative")

_LAYER_NORM = 8  # FLOPs per normalised element (mean, var, scale, shift).
_SILU, _GELU, _SOFTPLUS, _SIGMOID = 4, 8, 6, 3
_SOFTMAX = 5  # Scale, max, subtract, sum, divide per attention logit.


def _check_positive_int(name: str, value: Any) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(f"{name} must be a positive int, got {value!r}.")


def _check_modes(attention: str, scan: str) -> None:
  if attention not in ATTENTION_MODES:
    raise ValueError(f"Unknown attention {attention!r}; expected one of "
                     f"{list(ATTENTION_MODES)}.")
  if scan not in SCAN_SCHEDULES:
    raise ValueError(f"Unknown scan {scan!r}; expected one of "
                     f"{list(SCAN_SCHEDULES)}.")


def _check_kind(kind: str) -> None:
  if kind not in BLOCK_KINDS:
    raise ValueError(f"Unknown block kind {kind!r}; expected one of "
                     f"{list(BLOCK_KINDS)}.")


def _s4d_params(h: int, d_state: int) -> int:
  # D, log_dt: [h]; log_A_real, A_imag: [h, m]; C: [h, m, 2].
  return 2 * h + 4 * h * (d_state // 2)


def block_params(config: Any, kind: str) -> int:
  """Parameters of one block of `kind` (its LayerNorm included).

  Args:
    config: a `ModelConfig` (duck-typed, see the module docstring).
    kind: one of `BLOCK_KINDS`.

  Returns:
    The number of scalars, equal to the block's initialised params.
  """
  _check_kind(kind)
  d = config.d_model
  e, n, k = config.expand * d, config.d_state, config.d_conv
  r = config.resolved_dt_rank
  mixer = {
      "attn": 4 * d * d + 4 * d,
      "mlp": 2 * config.mlp_ratio * d * d + config.mlp_ratio * d + d,
      # in_proj, conv (+bias), x_proj, dt_proj (+bias), A_log, D, out_proj.
      "mamba": (2 * e * d + (k + 1) * e + e * (r + 2 * n) + (r + 1) * e
                + e * n + e + e * d),
      # S4D core, output_linear Conv1d(H, 2H, 1) with bias.
      "s4d": _s4d_params(d, n) + 2 * d * d + 2 * d,
      # in_proj, conv (+bias), S4D core on E channels, out_proj.
      "s4_mamba": 2 * e * d + (k + 1) * e + _s4d_params(e, n) + e * d,
  }[kind]
  return mixer + _norm_params(config)


def _norm_params(config: Any) -> int:
  """LayerNorm: scale and bias; RMSNorm (`norm="rms"`): scale only."""
  per_channel = 1 if getattr(config, "norm", "layer") == "rms" else 2
  return per_channel * config.d_model


def _vocab(config: Any) -> Any:
  """The vocabulary of a language-model config, else None."""
  return getattr(config, "vocab_size", None)


def param_breakdown(config: Any) -> dict[str, int]:
  """Parameter count per component: read_in, wpe, each block, ln_f, ...

  Returns:
    {"read_in", "wpe" (if positions), "blocks_{i}" (one per block),
    "ln_f", "read_out"} -> count; a language model (`vocab_size`) has
    "embedding" (and "lm_head" when untied) instead of read_in / read_out.
  """
  d = config.d_model
  vocab = _vocab(config)
  if vocab is None:
    out = {"read_in": config.d_in * d + d}
  else:
    out = {"embedding": vocab * d}
  if config.uses_positions:
    out["wpe"] = config.n_positions * d
  for i, kind in enumerate(config.block_pattern):
    out[f"blocks_{i}"] = block_params(config, kind)
  out["ln_f"] = _norm_params(config)
  if vocab is None:
    out["read_out"] = d * config.d_out + config.d_out
  elif not getattr(config, "tie_embeddings", True):
    out["lm_head"] = d * vocab
  return out


def param_count(config: Any) -> int:
  """Total parameters of `ICLModel(config)` (no unused embeddings)."""
  return sum(param_breakdown(config).values())


def matmul_params(config: Any) -> int:
  """P_matmul: weights of every matmul (read-in/out and projections)."""
  d = config.d_model
  e, n, r = config.expand * d, config.d_state, config.resolved_dt_rank
  per_kind = {
      "attn": 4 * d * d,
      "mlp": 2 * config.mlp_ratio * d * d,
      "mamba": 2 * e * d + e * (r + 2 * n) + r * e + e * d,
      "s4d": 2 * d * d,
      "s4_mamba": 3 * e * d,
  }
  for kind in config.block_pattern:
    _check_kind(kind)
  return (_io_width(config) * d
          + sum(per_kind[k] for k in config.block_pattern))


def _io_width(config: Any) -> int:
  """Read-in plus read-out matmul widths.

  An embedding lookup is no matmul: a language model has only its
  vocab_size-wide read-out.
  """
  vocab = _vocab(config)
  return config.d_in + config.d_out if vocab is None else vocab


def associative_scan_flops(length: int) -> int:
  """FLOPs per channel of `jax.lax.associative_scan` of h_t = a_t h_{t-1} + b_t.

  Only h (the b part) is consumed, so a-products that feed nothing are
  dropped by jit. The odd/even recursion combines floor(l / 2) pairs on
  the way up (3 FLOPs: a a', a' b + b'), recurses on them, fills the
  ceil(l / 2) - 1 remaining positions on the way down (2 FLOPs: a' b + b')
  and merges the halves with one add per element (jax's interleave): ~7 l
  in all, against 2 l for a sequential loop.
  """
  _check_positive_int("length", length)
  if length < 2:
    return 0
  half = length // 2
  if half == 1:  # The pair's a-product would feed nothing.
    return 2 + 2 * (length - 2) + length
  return (3 * half + associative_scan_flops(half) + 2 * (length - half - 1)
          + length)


def _fft(n: int) -> float:
  """FLOPs of a real FFT of length n (half a complex 5 n log2 n FFT)."""
  return 2.5 * n * math.log2(n)


def _s4d_core(h: int, m: int, t: int) -> dict[str, float]:
  """S4D kernel + FFT causal conv + D skip on h channels of t steps."""
  n_fft, bins = 2 * t, t + 1
  return {
      # decay/phase products, cos/sin mix, mode sum: ~7 per (h, m, step).
      "ssm": 7 * h * m * t + h * (3 * _fft(n_fft) + 6 * bins),
      "elementwise": 2 * h * t,  # + D * u
  }


def block_flops(config: Any, kind: str, seq_len: int, *,
                attention: str = "full",
                scan: str = "sequential") -> dict[str, float]:
  """Forward FLOPs of one block on one sequence, by category.

  Args:
    config: a `ModelConfig` (duck-typed).
    kind: one of `BLOCK_KINDS`.
    seq_len: tokens T in the sequence.
    attention: "full" or "causal" score counting (module docstring).
    scan: "sequential" or "associative" Mamba scan schedule.

  Returns:
    {category: FLOPs} over `CATEGORIES` (floats; see `model_flops`).
  """
  _check_kind(kind)
  _check_positive_int("seq_len", seq_len)
  _check_modes(attention, scan)
  t, d = seq_len, config.d_model
  e, n, k = config.expand * d, config.d_state, config.d_conv
  r = config.resolved_dt_rank
  out = dict.fromkeys(CATEGORIES, 0.0)
  # Pre-norm LayerNorm and the residual add.
  out["elementwise"] = (_LAYER_NORM + 1) * t * d
  if kind == "attn":
    pairs = t * t if attention == "full" else t * (t + 1) // 2
    out["matmul"] = 8 * t * d * d
    out["attention"] = 4 * pairs * d
    out["elementwise"] += 4 * t * d + _SOFTMAX * config.n_head * pairs
  elif kind == "mlp":
    hidden = config.mlp_ratio * d
    out["matmul"] = 4 * t * d * hidden
    out["elementwise"] += t * (hidden * (1 + _GELU) + d)
  elif kind == "mamba":
    out["matmul"] = 2 * t * (2 * e * d + e * (r + 2 * n) + r * e + e * d)
    out["conv"] = 2 * k * t * e
    if scan == "sequential":
      out["ssm"] = 6 * t * e * n
    else:
      # Discretise (2), contract with C (2), scan, and the h0 term.
      out["ssm"] = (4 * t + associative_scan_flops(t) + 2) * e * n
    # silu(u), dt bias + softplus, delta * u, D skip (2), silu(z), gate.
    out["elementwise"] += t * e * (_SILU + 1 + _SOFTPLUS + 1 + 2 + _SILU + 1)
  elif kind == "s4d":
    core = _s4d_core(d, n // 2, t)
    out["matmul"] = 2 * t * d * 2 * d
    out["ssm"] = core["ssm"]
    # Core skip, exact GELU, output bias, GLU (sigmoid and product).
    out["elementwise"] += core["elementwise"] + t * d * (
        _GELU + 2 + _SIGMOID + 1)
  else:  # s4_mamba
    core = _s4d_core(e, n // 2, t)
    out["matmul"] = 2 * t * 3 * e * d
    out["conv"] = 2 * k * t * e
    out["ssm"] = core["ssm"]
    out["elementwise"] += core["elementwise"] + t * e * (_SILU + 1)
  return out


def model_flops(config: Any, seq_len: int, *, batch: int = 1,
                training: bool = False, attention: str = "full",
                scan: str = "sequential") -> dict[str, int]:
  """Analytic FLOPs of `ICLModel(config)` on `batch` sequences.

  Args:
    config: a `ModelConfig` (duck-typed, see the module docstring).
    seq_len: tokens T per sequence (2 N for N interleaved examples).
    batch: sequences.
    training: forward + backward (3x forward) instead of forward only.
    attention: "full" (all T^2 scores, as the dense kernel) or "causal"
      (only the T (T + 1) / 2 visible ones).
    scan: Mamba scan schedule, "sequential" (6 T E N, the algorithmic
      count) or "associative" (the work of `lax.associative_scan`).

  Returns:
    {"matmul", "attention", "ssm", "conv", "elementwise", "total"} -> FLOPs
    (ints), where "matmul" = 2 T P_matmul per sequence (`matmul_params`).

  Raises:
    ValueError: on a bad seq_len, batch, attention or scan value, an unknown
      block kind, or seq_len > n_positions for a model with learned
      positions.
  """
  _check_positive_int("seq_len", seq_len)
  _check_positive_int("batch", batch)
  _check_modes(attention, scan)
  if config.uses_positions and seq_len > config.n_positions:
    raise ValueError(f"seq_len={seq_len} exceeds n_positions="
                     f"{config.n_positions} of the learned position table.")
  t, d = seq_len, config.d_model
  totals = dict.fromkeys(CATEGORIES, 0.0)
  totals["matmul"] = 2 * t * _io_width(config) * d
  # Read-in/out biases, positions, final LayerNorm.
  totals["elementwise"] = t * (d + config.d_out + _LAYER_NORM * d)
  if config.uses_positions:
    totals["elementwise"] += t * d
  for kind in config.block_pattern:
    for name, value in block_flops(config, kind, t, attention=attention,
                                   scan=scan).items():
      totals[name] += value
  scale = batch * (3 if training else 1)
  out = {name: int(round(v * scale)) for name, v in totals.items()}
  out["total"] = sum(out.values())
  return out
