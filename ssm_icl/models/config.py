"""`ModelConfig`: the frozen, validated description of one model.

The training configs are ml_collections `ConfigDict`s; they are converted to
this dataclass once, at the edge (`ModelConfig.from_config_dict`), so that
modules below see typed, hashable, validated values and CLI overrides cannot
break derived values (`d_inner`, `dt_rank` are properties, not references).
This is the only module below `train` that knows about `ConfigDict`, and it
only duck-types it (`to_dict()`), so it does not import ml_collections.

Every field is checked when the config is built (`validate` here, each
block sub-config in its own `__post_init__`), before anything is traced or
compiled; a bad value raises `errors.UserError` (`errors.UserTypeError` for
a wrong type; they are ValueError / TypeError) naming the field, the value
and what was expected.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Mapping, Optional

import jax.numpy as jnp

from ssm_icl import errors
from ssm_icl.models import families
from ssm_icl.nn import blocks
from ssm_icl.nn import layers

DTYPES = {
    "float32": jnp.float32,
    "bfloat16": jnp.bfloat16,
    "float16": jnp.float16,
}

_POSITIVE_INTS = ("n_layer", "d_model", "d_in", "d_out", "n_positions")
_BOOLS = ("remat", "scan_layers", "residual_in_fp32", "tie_embeddings")


@dataclasses.dataclass(frozen=True, init=False)
class ModelConfig:
  """Architecture, numerics and compilation options of an `ICLModel`.

  The block hyperparameters live in one sub-config per mixer family,
  `mixers` (`nn.blocks.MixerConfigs`: `mamba.MambaConfig`,
  `attention.AttentionConfig`, `s4.S4Config`, `layers.MlpConfig`). They are
  also *flat keys* of this config, named as the sub-config fields: the
  constructor, `from_config_dict`, `replace` and attribute reads accept
  `d_state`, `n_head`, `scan_impl`, ... and route each to every sub-config
  that has it (`d_state` sets Mamba's and S4's). So a new block
  hyperparameter is one new field of one sub-config; nothing here changes.

    ModelConfig(family="mamba", d_state=8)            # flat key
    cfg.d_state, cfg.mixers.mamba.d_state            # both 8

  Block hyperparameters (flat keys; see the sub-configs for their meaning):
  d_state, d_conv, expand, dt_min, dt_max (Mamba and S4), dt_rank,
  dt_init_floor, scan_impl, chunk_size (Mamba), n_head, attn_impl,
  attn_block_size (attention), s4_mamba_dropout (S4), mlp_ratio (MLP).

  Attributes:
    family: one of `families.FAMILY_NAMES`: "transformer", "mamba", "s4",
      "s4_mamba", "hybrid", "mambaformer" or "custom".
    pattern: block kinds of a "custom" model, as "mamba,attn,mlp" or a
      sequence of `nn.blocks.BlockKind` values (stored as a tuple of
      `BlockKind`); must be None for the other families.
    n_layer: depth as counted by the paper's code (see `families`).
    d_model: residual width D.
    d_in: token width (the read-in's input).
    d_out: prediction width (the read-out's output).
    n_positions: rows of the learned position table, i.e. the longest token
      sequence a model with positions accepts.
    pos_emb: a `families.PosEmb` ("learned" or "none"); None takes the
      family's default.
    dropout: dropout on each block's output before the residual add (0 in
      the paper).
    remat: rematerialise each block (or each scanned group) in the backward
      pass.
    scan_layers: run the repeated group of the block pattern with `nn.scan`
      (params stacked on a leading "layers" axis); faster to compile deep
      models.
    dtype: compute dtype name ("float32", "bfloat16", "float16").
    param_dtype: parameter storage dtype name.
    init: a `families.ModelInit`: "reference" (each family's reference
      init, see `families`), or "gpt2" / "mamba" to force one init style on
      every family.
    norm: the norm of every block and of the final norm, a
      `nn.layers.NormKind`: "layer" (LayerNorm, the paper's code) or "rms"
      (RMSNorm, Hugging Face and pretrained Mamba).
    residual_in_fp32: keep the residual stream in float32 whatever the
      compute dtype (official Mamba's option; True by default here). When
      False it is kept in the compute dtype.
    vocab_size: None for the ICL model (float tokens [b, l, d_in] through a
      linear read-in and read-out). An int makes a language model: tokens
      are int ids [b, l] embedded by `embedding` [vocab_size, d_model], and
      the output is [b, l, vocab_size] logits; d_in and d_out are then
      unused.
    tie_embeddings: with vocab_size, read the logits out with the embedding
      matrix (a tied LM head, as HF `MambaForCausalLM`); otherwise with a
      separate bias-free `lm_head`.
    mixers: the block hyperparameters, one sub-config per mixer family
      (also given as a mapping {"mamba": {...}, ...}).
  """
  family: str = "mamba"
  pattern: Optional[tuple[blocks.BlockKind, ...]] = None
  n_layer: int = 4
  d_model: int = 128
  d_in: int = 20
  d_out: int = 1
  n_positions: int = 256
  pos_emb: Optional[families.PosEmb] = None
  dropout: float = 0.0
  remat: bool = False
  scan_layers: bool = False
  dtype: str = "float32"
  param_dtype: str = "float32"
  init: families.ModelInit = families.INIT_REFERENCE
  norm: layers.NormKind = layers.NormKind.LAYER
  residual_in_fp32: bool = True
  vocab_size: Optional[int] = None
  tie_embeddings: bool = True
  mixers: blocks.MixerConfigs = blocks.MixerConfigs()

  def __init__(self, **kwargs: Any):
    """Builds a validated config from fields and flat block hyperparameters.

    Args:
      **kwargs: any of the attributes above, and any flat key of the block
        sub-configs (`nn.blocks.MixerConfigs.flat_keys()`); a flat key
        overrides the same field given inside `mixers`.

    Raises:
      UserError: on an unknown key (all of them are named) or an invalid
        value (`UserTypeError` for a wrong type).
    """
    fields = {f.name: f.default for f in dataclasses.fields(ModelConfig)}
    flat_keys = blocks.MixerConfigs.flat_keys()
    unknown = sorted(str(k) for k in kwargs
                     if k not in fields and k not in flat_keys)
    if unknown:
      raise errors.UserError(
          f"Unknown model config keys {unknown}; valid keys are "
          f"{sorted(set(fields) | set(flat_keys))}.")
    for name, default in fields.items():
      object.__setattr__(self, name, kwargs.get(name, default))
    mixers = self.mixers
    if isinstance(mixers, Mapping):
      mixers = blocks.MixerConfigs.from_mapping(mixers)
    elif not isinstance(mixers, blocks.MixerConfigs):
      raise errors.UserTypeError(f"mixers must be a MixerConfigs or a "
                                 f"mapping, got {mixers!r}.")
    flat = {k: v for k, v in kwargs.items() if k in flat_keys}
    object.__setattr__(self, "mixers", mixers.replace_flat(flat))
    self.validate()

  def __getattr__(self, name: str) -> Any:
    # Only reached for names that are not fields: the flat view of the
    # block hyperparameters (`cfg.d_state`). `__dict__` avoids recursing
    # while an instance is being unpickled.
    mixers = self.__dict__.get("mixers")
    if mixers is None or name.startswith("__"):
      raise AttributeError(name)
    try:
      return mixers.flat_value(name)
    except AttributeError:
      raise AttributeError(f"ModelConfig has no attribute {name!r}.") from None

  # --------------------------------------------------------------- building

  @classmethod
  def from_config_dict(cls, cd: Any) -> "ModelConfig":
    """Builds a config from a ConfigDict, a plain mapping or a ModelConfig.

    Args:
      cd: an ml_collections `ConfigDict` (anything with `to_dict()`), a
        mapping of field names and flat block hyperparameters to values
        (e.g. a saved config.json), or a `ModelConfig`.

    Returns:
      A validated `ModelConfig`.

    Raises:
      UserError: on keys that are not fields (all of them are named) or on
        invalid values.
    """
    if isinstance(cd, ModelConfig):
      return cd
    if hasattr(cd, "to_dict"):
      cd = cd.to_dict()
    if not isinstance(cd, Mapping):
      raise errors.UserTypeError(f"Expected a ConfigDict, a mapping or a "
                                 f"ModelConfig, got {type(cd).__name__}.")
    return cls(**{str(k): v for k, v in cd.items()})

  def to_dict(self) -> dict[str, Any]:
    """The flat view as a plain JSON-friendly dict (enums as values).

    Every field but `mixers`, plus the flat block hyperparameters; only
    sub-configs given apart (e.g. another d_state for S4) add a "mixers"
    entry. `from_config_dict` reads it back.
    """
    d = {f.name: _plain(getattr(self, f.name))
         for f in dataclasses.fields(self) if f.name != "mixers"}
    d.update(self.mixers.to_dict())
    return d

  def replace(self, **changes: Any) -> "ModelConfig":
    """A copy with some fields or flat keys changed (validated again)."""
    return dataclasses.replace(self, **changes)

  # ------------------------------------------------------------- validation

  def validate(self) -> None:
    """Checks and normalises the fields (the sub-configs check their own).

    Strings of closed sets are parsed to their enums here, and the pattern
    to a tuple of `BlockKind`s, so equal configs hash equal.

    Raises:
      UserError: naming the first invalid field, its value and what was
        expected (`UserTypeError` for a wrong type).
    """
    def normalise(name, value):
      object.__setattr__(self, name, value)

    if self.family not in families.FAMILY_NAMES:
      raise errors.UserError(f"Unknown family {self.family!r}; expected one of "
                             f"{list(families.FAMILY_NAMES)}.")
    if self.family == families.CUSTOM and self.pattern is None:
      raise errors.UserError("pattern is required for family='custom' (e.g. "
                             "pattern='mamba,attn,mlp').")
    if self.family != families.CUSTOM and self.pattern is not None:
      raise errors.UserError(f"pattern={self.pattern!r} is only used with "
                             f"family='custom', not family={self.family!r}.")
    if self.pattern is not None:
      names = families.parse_pattern(self.pattern)
      unknown = [n for n in names
                 if n not in {k.value for k in blocks.BlockKind}]
      if unknown:
        raise errors.UserError(
            f"Unknown block kind(s) {unknown} in pattern {list(names)}; "
            f"expected names from {[k.value for k in blocks.BlockKind]}.")
      normalise("pattern", tuple(blocks.BlockKind(n) for n in names))
    for name in _POSITIVE_INTS:
      errors.check_positive_int(name, getattr(self, name))
    if self.vocab_size is not None:
      errors.check_positive_int("vocab_size", self.vocab_size)
    for name in _BOOLS:
      errors.check_bool(name, getattr(self, name))
    errors.check_fraction("dropout", self.dropout)
    for name in ("dtype", "param_dtype"):
      if getattr(self, name) not in DTYPES:
        raise errors.UserError(f"Unknown {name} {getattr(self, name)!r}; "
                               f"expected one of {list(DTYPES)}.")
    normalise("init", errors.parse_enum("init", self.init, families.ModelInit))
    normalise("norm", errors.parse_enum("norm", self.norm, layers.NormKind))
    if self.pos_emb is not None:
      normalise("pos_emb", errors.parse_enum("pos_emb", self.pos_emb,
                                             families.PosEmb))

    pattern = self.block_pattern
    if blocks.BlockKind.ATTN in pattern:
      self.mixers.attention.head_dim(self.d_model)
    s4_kinds = {blocks.BlockKind.S4D, blocks.BlockKind.S4_MAMBA}
    if s4_kinds & set(pattern) and self.mixers.s4.d_state < 2:
      raise errors.UserError(
          f"d_state={self.mixers.s4.d_state} must be at least 2 for S4 "
          f"blocks (they use d_state // 2 complex modes).")

  # ------------------------------------------------------ derived properties

  @property
  def d_inner(self) -> int:
    """Mamba inner width E = expand * d_model."""
    return self.mixers.mamba.d_inner(self.d_model)

  @property
  def resolved_dt_rank(self) -> int:
    """Mamba's dt_rank with "auto" resolved to ceil(d_model / 16)."""
    return self.mixers.mamba.resolved_dt_rank(self.d_model)

  @property
  def block_pattern(self) -> tuple[blocks.BlockKind, ...]:
    """The block kinds of the model, in order."""
    return families.block_pattern(self.family, self.n_layer, self.pattern)

  @property
  def position_embedding(self) -> families.PosEmb:
    """`PosEmb.LEARNED` or `PosEmb.NONE`, with the family default filled in."""
    return self.pos_emb or families.default_pos_emb(self.family)

  @property
  def uses_positions(self) -> bool:
    """Whether the model adds a learned position table to its tokens."""
    return self.position_embedding == families.POS_LEARNED

  @property
  def init_style(self) -> Any:
    """The `nn.initializers.InitStyle` the blocks use."""
    return families.init_style(self.family, self.init)

  @property
  def is_language_model(self) -> bool:
    """Whether tokens are int ids (a token embedding and an LM head)."""
    return self.vocab_size is not None

  @property
  def residual_dtype(self) -> Any:
    """dtype of the residual stream (see `residual_in_fp32`)."""
    return jnp.float32 if self.residual_in_fp32 else self.compute_dtype

  @property
  def compute_dtype(self) -> Any:
    """The jnp dtype of `dtype`."""
    return DTYPES[self.dtype]

  @property
  def storage_dtype(self) -> Any:
    """The jnp dtype of `param_dtype`."""
    return DTYPES[self.param_dtype]

  def block_settings(self) -> blocks.BlockSettings:
    """What every block of this model shares (its sub-configs included)."""
    return blocks.BlockSettings(
        d_model=self.d_model, n_layer=self.n_layer, mixers=self.mixers,
        dropout=self.dropout, init_style=self.init_style, norm=self.norm,
        dtype=self.compute_dtype, param_dtype=self.storage_dtype)


def _plain(value: Any) -> Any:
  """JSON-friendly: enums as their values, tuples as lists."""
  if isinstance(value, enum.Enum):
    return value.value
  if isinstance(value, tuple):
    return [_plain(v) for v in value]
  return value
