"""`ICLModel`: read-in, optional positions, a block pattern, norm, read-out.

  tokens [b, l, d_in] -> read_in -> (+ wpe[:l]) -> blocks_0 .. blocks_{n-1}
                      -> ln_f -> read_out -> [b, l, d_out]

A language model (`vocab_size` set) reads int ids [b, l] through `embedding`
and reads logits out with the tied embedding (or `lm_head`). Recurrent
decoding (`init_cache`, `prefill`, `decode_step`) threads a `ModelCache`
pytree through the same modules.

The blocks come from `config.block_pattern` (see `families`). By default they
run as a Python loop (params `blocks_{i}`). With `scan_layers=True` the
longest repeated group of the pattern (("attn", "mlp") for a Transformer,
("mamba",) for Mamba, ("mamba", "attn") for MambaFormer) runs under `nn.scan`
with its params stacked on a leading "layers" axis (param
`scanned_blocks/block_{j}`), so a 24-block model compiles one group instead of
24 blocks; blocks before and after the group keep their loop names.
`stack_layers` / `unstack_layers` convert params between the two layouts.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from flax import linen as nn
from flax import struct
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from ssm_icl.models import config as config_lib
from ssm_icl.models import families
from ssm_icl.nn import axes
from ssm_icl.nn import blocks
from ssm_icl.nn import initializers as inits
from ssm_icl.nn import layers

ModelConfig = config_lib.ModelConfig
SCANNED = "scanned_blocks"


def scan_layout(pattern: tuple[str, ...]) -> tuple[int, int, int]:
  """Where the repeated group of a block pattern is.

  Picks the (start, period, repeats) that covers the most blocks with
  `repeats >= 2` copies of `pattern[start:start + period]`; among equal
  covers, the one ending last (so MambaFormer's leading Mamba block is the
  unscanned prefix), then the shortest period.

  Args:
    pattern: tuple of block kinds.

  Returns:
    (start, period, repeats); repeats == 0 when nothing repeats.
  """
  n = len(pattern)
  best, best_key = (0, 0, 0), (0, 0, 0)
  for start in range(n):
    for period in range(1, (n - start) // 2 + 1):
      group = pattern[start:start + period]
      repeats = 1
      while pattern[start + repeats * period:
                    start + (repeats + 1) * period] == group:
        repeats += 1
      if repeats < 2:
        continue
      end = start + period * repeats
      key = (period * repeats, end, -period)
      if key > best_key:
        best, best_key = (start, period, repeats), key
  return best


def _scanned_indices(config: ModelConfig) -> tuple[int, int, int]:
  layout = scan_layout(config.block_pattern)
  if not config.scan_layers or layout[2] < 2:
    return 0, 0, 0
  return layout


class _BlockGroup(nn.Module):
  """One copy of the repeated group, as an `nn.scan` body."""
  kinds: tuple[str, ...]
  settings: blocks.BlockSettings
  deterministic: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, _: Any) -> tuple[jax.Array, None]:
    for j, kind in enumerate(self.kinds):
      x = blocks.Block(kind, self.settings, name=f"block_{j}")(
          x, self.deterministic)
    return x, None


@struct.dataclass
class ModelCache:
  """The decoding state of an `ICLModel` (a pytree).

  Attributes:
    position: int32 scalar, the number of tokens seen (the next token's
      position, used for the learned position table).
    blocks: one cache per block, in pattern order (`Block.init_cache`).
  """
  position: jax.Array
  blocks: tuple[Any, ...]


def _unwrap(params: Any) -> Any:
  """The "params" collection from it or from {"params": ...} variables."""
  if isinstance(params, Mapping) and set(params) == {"params"}:
    return params["params"]
  return params


class ICLModel(nn.Module):
  """The in-context-learning model of the paper, for any block pattern.

  Full sequences go through `apply` (training and evaluation). For
  recurrent decoding, `init_cache` / `prefill` / `decode_step` carry an
  explicit cache pytree (`ModelCache`), so each new token costs O(1) work
  in the SSM blocks (O(length) in attention).

  Attributes:
    config: a validated `ModelConfig`.
  """
  config: ModelConfig

  def _check_tokens(self, tokens: jax.Array) -> None:
    cfg = self.config
    if cfg.is_language_model:
      if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise ValueError(f"A language model (vocab_size={cfg.vocab_size}) "
                         f"takes int token ids [batch, length], got "
                         f"{tokens.dtype} of shape {tokens.shape}.")
    elif tokens.ndim != 3 or tokens.shape[-1] != cfg.d_in:
      raise ValueError(f"tokens must be [batch, length, d_in={cfg.d_in}], "
                       f"got shape {tokens.shape}.")

  @nn.compact
  def __call__(self, tokens: jax.Array, *, deterministic: bool = True,
               cache: Optional[ModelCache] = None) -> Any:
    """Runs the model on a sequence, or continues a decoding cache.

    Args:
      tokens: [b, l, d_in] float inputs, or [b, l] int ids for a language
        model (`config.vocab_size`).
      deterministic: disables dropout when True; otherwise `apply` needs a
        "dropout" rng.
      cache: optional state after the tokens before these (see
        `init_cache`); needs the loop layout (`scan_layers=False`).

    Returns:
      [b, l, d_out] float32 outputs ([b, l, vocab_size] logits for a
      language model); output t depends on tokens <= t only. With a cache,
      (outputs, the cache after these tokens).

    Raises:
      ValueError: wrong token shape, l > n_positions for a model with a
        learned position table, or a cache with `scan_layers=True`.
    """
    cfg = self.config
    self._check_tokens(tokens)
    length = tokens.shape[1]
    if cfg.uses_positions and length > cfg.n_positions:
      raise ValueError(
          f"Sequence of {length} tokens is longer than n_positions="
          f"{cfg.n_positions} (rows of the learned position table); raise "
          f"n_positions or use pos_emb='none'.")
    if cache is not None and cfg.scan_layers:
      raise ValueError("Decoding with a cache needs scan_layers=False; "
                       "init_cache / prefill / decode_step convert the "
                       "params for you.")
    settings = cfg.block_settings()
    dtypes = dict(dtype=cfg.compute_dtype, param_dtype=cfg.storage_dtype)

    if cfg.is_language_model:
      embed = nn.Embed(
          cfg.vocab_size, cfg.d_model,
          embedding_init=nn.with_logical_partitioning(
              inits.normal(inits.GPT2_STD), (axes.IO, axes.EMBED)),
          name="embedding", **dtypes)
      x = embed(tokens)
    else:
      x = layers.dense(cfg.d_model, (axes.IO, axes.EMBED), fan_in=cfg.d_in,
                       name="read_in", **dtypes)(tokens)
    # The residual stream is float32 whatever the compute dtype (unless
    # residual_in_fp32 is turned off).
    x = x.astype(cfg.residual_dtype)
    if cfg.uses_positions:
      std = families.position_std(cfg.init_style)
      wpe = self.param(
          "wpe",
          nn.with_logical_partitioning(inits.normal(std),
                                       (axes.POS, axes.EMBED)),
          (cfg.n_positions, cfg.d_model), cfg.storage_dtype)
      if cache is None:
        rows = wpe[:length]
      else:  # Positions past n_positions are clamped: keep below it.
        rows = lax.dynamic_slice_in_dim(wpe, cache.position, length)
      x = x + rows.astype(x.dtype)
    x = nn.with_logical_constraint(x, axes.RESIDUAL)

    if cache is None:
      x = self._blocks(x, settings, deterministic)
    else:
      new_caches = []
      for i, kind in enumerate(cfg.block_pattern):
        x, block_cache = blocks.Block(kind, settings, name=f"blocks_{i}")(
            x, deterministic, cache.blocks[i])
        new_caches.append(block_cache)
      cache = ModelCache(position=cache.position + length,
                         blocks=tuple(new_caches))

    x = layers.norm(cfg.norm, name="ln_f", **dtypes)(x)
    if not cfg.is_language_model:
      y = layers.dense(cfg.d_out, (axes.EMBED, axes.IO), fan_in=cfg.d_model,
                       name="read_out", **dtypes)(x)
    elif cfg.tie_embeddings:
      y = embed.attend(x.astype(cfg.compute_dtype))
    else:
      y = layers.dense(cfg.vocab_size, (axes.EMBED, axes.IO), use_bias=False,
                       name="lm_head", **dtypes)(x)
    y = y.astype(jnp.float32)
    return y if cache is None else (y, cache)

  def _blocks(self, x: jax.Array, settings: blocks.BlockSettings,
              deterministic: bool) -> jax.Array:
    """The block pattern on a full sequence (loop, scan and remat)."""
    cfg = self.config
    pattern = cfg.block_pattern
    start, period, repeats = _scanned_indices(cfg)
    block_cls = blocks.Block
    if cfg.remat:
      # `self` is argument 0, so `deterministic` is argument 2.
      block_cls = nn.remat(blocks.Block, static_argnums=(2,))
    i = 0
    while i < len(pattern):
      if repeats and i == start:
        group_cls = _BlockGroup
        if cfg.remat:
          group_cls = nn.remat(_BlockGroup, prevent_cse=False)
        scanned = nn.scan(
            group_cls, variable_axes={"params": 0},
            split_rngs={"params": True, "dropout": True}, length=repeats,
            metadata_params={nn.PARTITION_NAME: axes.LAYERS})
        x, _ = scanned(pattern[start:start + period], settings,
                       deterministic, name=SCANNED)(x, None)
        i += period * repeats
        continue
      x = block_cls(pattern[i], settings, name=f"blocks_{i}")(
          x, deterministic)
      i += 1
    return x

  # ------------------------------------------------------------- decoding

  @nn.nowrap
  def init_cache(self, batch: int, max_len: int) -> ModelCache:
    """The decoding cache at the sequence start.

    Args:
      batch: prompts decoded together.
      max_len: the longest sequence (prompt plus generated tokens) to
        decode; sizes the attention key/value caches (the SSM states do not
        depend on it).

    Returns:
      A `ModelCache` of zeros (position 0).

    Raises:
      ValueError: on non-positive sizes, or max_len > n_positions for a
        model with a learned position table.
    """
    cfg = self.config
    for name, value in (("batch", batch), ("max_len", max_len)):
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}.")
    if cfg.uses_positions and max_len > cfg.n_positions:
      raise ValueError(f"max_len={max_len} exceeds n_positions="
                       f"{cfg.n_positions}, the rows of the learned "
                       f"position table.")
    settings = cfg.block_settings()
    return ModelCache(
        position=jnp.zeros((), jnp.int32),
        blocks=tuple(blocks.Block(kind, settings).init_cache(batch, max_len)
                     for kind in cfg.block_pattern))

  @nn.nowrap
  def _decoder(self, params: Any) -> tuple["ICLModel", Any]:
    """The loop-layout model and its variables, for decoding."""
    cfg = self.config
    params = nn.meta.unbox(_unwrap(params))
    if cfg.scan_layers:
      params = unstack_layers(params, cfg)
    return ICLModel(cfg.replace(scan_layers=False)), {"params": params}

  @nn.nowrap
  def prefill(self, params: Any, tokens: jax.Array,
              max_len: int) -> tuple[jax.Array, ModelCache]:
    """Runs a prompt and returns its outputs and the cache after it.

    Args:
      params: the params collection (or {"params": ...} variables), in
        either layer layout.
      tokens: [b, l, d_in] prompt (or [b, l] int ids), l <= max_len.
      max_len: as in `init_cache`.

    Returns:
      (outputs [b, l, d_out] float32, equal to `apply` on the prompt, and
      the `ModelCache` after it, ready for `decode_step`).
    """
    if tokens.ndim < 2 or tokens.shape[1] > max_len:
      raise ValueError(f"tokens must be [batch, length, ...] with length <= "
                       f"max_len={max_len}, got shape {tokens.shape}.")
    model, variables = self._decoder(params)
    cache = self.init_cache(tokens.shape[0], max_len)
    return model.apply(variables, tokens, cache=cache)

  @nn.nowrap
  def decode_step(self, params: Any, cache: ModelCache,
                  token: jax.Array) -> tuple[jax.Array, ModelCache]:
    """One recurrent step: the output at the next token, and the new cache.

    Jit it once (`jax.jit(model.decode_step)`): every position reuses the
    same compiled step, since the position is part of the cache. Decoding
    past the cache's max_len (or n_positions) is not checked under jit.

    Args:
      params: as in `prefill`.
      cache: from `init_cache`, `prefill` or a previous step.
      token: [b, d_in] the next token (or [b] int ids).

    Returns:
      (output [b, d_out] float32 at that token, the cache after it).
    """
    model, variables = self._decoder(params)
    y, cache = model.apply(variables, token[:, None], cache=cache)
    return y[:, 0], cache


def build_model(config: Any) -> ICLModel:
  """An `ICLModel` from a ModelConfig, a dict or an ml_collections ConfigDict.

  Raises:
    ValueError: on unknown keys or invalid values (before any tracing).
  """
  return ICLModel(ModelConfig.from_config_dict(config))


def count_params(params: Any) -> int:
  """Number of scalars in a (possibly boxed or abstract) params pytree."""
  leaves = jax.tree.leaves(nn.meta.unbox(params))
  return int(sum(np.prod(leaf.shape, dtype=np.int64) for leaf in leaves))


def stack_layers(params: Mapping[str, Any], config: ModelConfig) -> dict:
  """Loop-layout params (`blocks_{i}`) -> the `scan_layers=True` layout.

  Args:
    params: unboxed params of `ICLModel(config.replace(scan_layers=False))`
      (the "params" collection, without the {"params": ...} wrapper).
    config: the config (its scan_layers value is ignored).

  Returns:
    Params for `ICLModel(config.replace(scan_layers=True))`; unchanged if the
    pattern has no repeated group.
  """
  start, period, repeats = scan_layout(config.block_pattern)
  out = dict(params)
  if repeats < 2:
    return out
  group = {}
  for j in range(period):
    names = [f"blocks_{start + k * period + j}" for k in range(repeats)]
    group[f"block_{j}"] = jax.tree.map(lambda *a: jnp.stack(a),
                                       *[out.pop(n) for n in names])
  out[SCANNED] = group
  return out


def unstack_layers(params: Mapping[str, Any], config: ModelConfig) -> dict:
  """The inverse of `stack_layers`: scan layout -> loop layout."""
  start, period, repeats = scan_layout(config.block_pattern)
  out = dict(params)
  if repeats < 2:
    return out
  group = out.pop(SCANNED)
  for j in range(period):
    for k in range(repeats):
      out[f"blocks_{start + k * period + j}"] = jax.tree.map(
          lambda a, k=k: a[k], group[f"block_{j}"])
  return out
