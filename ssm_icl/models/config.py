"""`ModelConfig`: the frozen, validated description of one model.

The training configs are ml_collections `ConfigDict`s; they are converted to
this dataclass once, at the edge (`ModelConfig.from_config_dict`), so that
modules below see typed, hashable, validated values and CLI overrides cannot
break derived values (`d_inner`, `dt_rank` are properties, not references).
This is the only module below `train` that knows about `ConfigDict`, and it
only duck-types it (`to_dict()`), so it does not import ml_collections.

Every field is checked in `__post_init__`, before anything is traced or
compiled; a bad value raises `errors.UserError` (`errors.UserTypeError` for
a wrong type; they are ValueError / TypeError) naming the field, the value
and what was expected.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Union

import jax.numpy as jnp

from ssm_icl import errors
from ssm_icl.models import families
from ssm_icl.nn import blocks
from ssm_icl.nn import layers
from ssm_icl.nn import mamba
from ssm_icl.ops import scan as scan_lib

# String values accepted for `attn_impl` (see `ssm_icl.ops.attention`).
ATTN_IMPLS = ("auto", "dense", "blocked")
SCAN_IMPLS = tuple(m.value for m in scan_lib.ScanImpl)
NORMS = tuple(k.value for k in layers.NormKind)
DTYPES = {
    "float32": jnp.float32,
    "bfloat16": jnp.bfloat16,
    "float16": jnp.float16,
}

_POSITIVE_INTS = ("n_layer", "d_model", "n_head", "d_in", "d_out",
                  "n_positions", "d_state", "d_conv", "expand", "mlp_ratio",
                  "attn_block_size")
_BOOLS = ("remat", "scan_layers", "residual_in_fp32", "tie_embeddings")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture, numerics and compilation options of an `ICLModel`.

  Attributes:
    family: one of `families.FAMILY_NAMES`: "transformer", "mamba", "s4",
      "s4_mamba", "hybrid", "mambaformer" or "custom".
    pattern: block kinds of a "custom" model, as "mamba,attn,mlp" or a tuple;
      must be None for the other families.
    n_layer: depth as counted by the paper's code (see `families`).
    d_model: residual width D.
    n_head: attention heads (D must be divisible by it when the model has
      attention).
    d_in: token width (the read-in's input).
    d_out: prediction width (the read-out's output).
    n_positions: rows of the learned position table, i.e. the longest token
      sequence a model with positions accepts.
    pos_emb: "learned" or "none"; None takes the family's default.
    d_state: SSM state size (S4D: d_state // 2 complex modes).
    d_conv: causal conv width of Mamba / S4-Mamba.
    expand: Mamba / S4-Mamba inner width / D.
    dt_rank: Mamba dt_rank or "auto" (= ceil(D / 16)).
    dt_min, dt_max: range of the initial step sizes.
    dt_init_floor: floor of the initial Mamba step size.
    mlp_ratio: MLP hidden width / D.
    scan_impl: selective-scan schedule, an `ops.scan.ScanImpl` value.
    chunk_size: selective-scan chunk length; None = the op's default.
    attn_impl: attention core, "auto", "dense" or "blocked".
    attn_block_size: block length of the blocked attention path.
    dropout: dropout on each block's output before the residual add (0 in
      the paper).
    s4_mamba_dropout: dropout inside S4-Mamba mixers (0.1 as in the
      reference; active only in training).
    remat: rematerialise each block (or each scanned group) in the backward
      pass.
    scan_layers: run the repeated group of the block pattern with `nn.scan`
      (params stacked on a leading "layers" axis); faster to compile deep
      models.
    dtype: compute dtype name ("float32", "bfloat16", "float16").
    param_dtype: parameter storage dtype name.
    init: "reference" (each family's reference init, see `families`), or
      "gpt2" / "mamba" to force one init style on every family.
    norm: the norm of every block and of the final norm, a
      `nn.layers.NormKind` value: "layer" (LayerNorm, the paper's code) or
      "rms" (RMSNorm, Hugging Face and pretrained Mamba).
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
  """
  family: str = "mamba"
  pattern: Optional[Union[str, tuple[str, ...]]] = None
  n_layer: int = 4
  d_model: int = 128
  n_head: int = 8
  d_in: int = 20
  d_out: int = 1
  n_positions: int = 256
  pos_emb: Optional[str] = None
  d_state: int = 16
  d_conv: int = 4
  expand: int = 2
  dt_rank: Union[int, str] = "auto"
  dt_min: float = 1e-3
  dt_max: float = 0.1
  dt_init_floor: float = 1e-4
  mlp_ratio: int = 4
  scan_impl: str = "auto"
  chunk_size: Optional[int] = None
  attn_impl: str = "auto"
  attn_block_size: int = 128
  dropout: float = 0.0
  s4_mamba_dropout: float = 0.1
  remat: bool = False
  scan_layers: bool = False
  dtype: str = "float32"
  param_dtype: str = "float32"
  init: str = families.INIT_REFERENCE
  norm: str = "layer"
  residual_in_fp32: bool = True
  vocab_size: Optional[int] = None
  tie_embeddings: bool = True

  def __post_init__(self):
    # Normalise the pattern to a tuple so equal configs hash equal.
    if self.pattern is not None:
      object.__setattr__(self, "pattern",
                         families.parse_pattern(self.pattern))
    self.validate()

  # --------------------------------------------------------------- building

  @classmethod
  def from_config_dict(cls, cd: Any) -> "ModelConfig":
    """Builds a config from a ConfigDict, a plain mapping or a ModelConfig.

    Args:
      cd: an ml_collections `ConfigDict` (anything with `to_dict()`), a
        mapping of field names to values, or a `ModelConfig`.

    Returns:
      A validated `ModelConfig`.

    Raises:
      ValueError: on keys that are not fields (all of them are named) or on
        invalid values.
    """
    if isinstance(cd, ModelConfig):
      return cd
    if hasattr(cd, "to_dict"):
      cd = cd.to_dict()
    if not isinstance(cd, Mapping):
      raise TypeError(f"Expected a ConfigDict, a mapping or a ModelConfig, "
                      f"got {type(cd).__name__}.")
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in cd if k not in fields)
    if unknown:
      raise errors.UserError(
          f"Unknown model config keys {unknown}; valid keys are "
          f"{sorted(fields)}.")
    return cls(**dict(cd))

  def to_dict(self) -> dict[str, Any]:
    """The fields as a plain dict (JSON-friendly; the pattern as a list)."""
    d = dataclasses.asdict(self)
    if d["pattern"] is not None:
      d["pattern"] = list(d["pattern"])
    return d

  def replace(self, **changes) -> "ModelConfig":
    """A copy with some fields changed (validated again)."""
    return dataclasses.replace(self, **changes)

  # ------------------------------------------------------------- validation

  def validate(self) -> None:
    """Raises ValueError / TypeError naming the first invalid field."""
    if self.family not in families.FAMILY_NAMES:
      raise errors.UserError(f"Unknown family {self.family!r}; expected one of "
                             f"{list(families.FAMILY_NAMES)}.")
    if self.family == families.CUSTOM and self.pattern is None:
      raise errors.UserError("pattern is required for family='custom' (e.g. "
                             "pattern='mamba,attn,mlp').")
    if self.family != families.CUSTOM and self.pattern is not None:
      raise errors.UserError(f"pattern={self.pattern!r} is only used with "
                             f"family='custom', not family={self.family!r}.")
    for name in _POSITIVE_INTS:
      _check_positive_int(name, getattr(self, name))
    if self.chunk_size is not None:
      _check_positive_int("chunk_size", self.chunk_size)
    if self.vocab_size is not None:
      _check_positive_int("vocab_size", self.vocab_size)
    for name in _BOOLS:
      if not isinstance(getattr(self, name), bool):
        raise errors.UserTypeError(f"{name} must be a bool, got "
                                   f"{getattr(self, name)!r}.")
    if self.dt_rank != "auto":
      _check_positive_int("dt_rank", self.dt_rank)
    for name in ("dt_min", "dt_max", "dt_init_floor"):
      _check_positive_float(name, getattr(self, name))
    if self.dt_min > self.dt_max:
      raise errors.UserError(f"dt_min={self.dt_min} must not exceed "
                             f"dt_max={self.dt_max}.")
    for name in ("dropout", "s4_mamba_dropout"):
      value = getattr(self, name)
      if not _is_number(value) or not 0.0 <= value < 1.0:
        raise errors.UserError(
            f"{name} must be a number in [0, 1), got {value!r}.")
    _check_choice("scan_impl", self.scan_impl, SCAN_IMPLS)
    _check_choice("attn_impl", self.attn_impl, ATTN_IMPLS)
    _check_choice("dtype", self.dtype, tuple(DTYPES))
    _check_choice("param_dtype", self.param_dtype, tuple(DTYPES))
    _check_choice("init", self.init, families.INITS)
    _check_choice("norm", self.norm, NORMS)
    if self.pos_emb is not None:
      _check_choice("pos_emb", self.pos_emb, families.POS_EMBS)

    pattern = self.block_pattern
    unknown = [k for k in pattern if k not in blocks.BLOCKS]
    if unknown:
      raise errors.UserError(f"Unknown block kind(s) {unknown} in pattern "
                             f"{list(pattern)}; expected names from "
                             f"{sorted(blocks.BLOCKS)}.")
    if "attn" in pattern and self.d_model % self.n_head:
      raise errors.UserError(f"d_model={self.d_model} must be divisible by "
                             f"n_head={self.n_head}.")
    if {"s4d", "s4_mamba"} & set(pattern) and self.d_state < 2:
      raise errors.UserError(
          f"d_state={self.d_state} must be at least 2 for S4 "
          f"blocks (they use d_state // 2 complex modes).")

  # ------------------------------------------------------ derived properties

  @property
  def d_inner(self) -> int:
    """Mamba / S4-Mamba inner width E = expand * d_model."""
    return self.expand * self.d_model

  @property
  def resolved_dt_rank(self) -> int:
    """dt_rank with "auto" resolved to ceil(d_model / 16)."""
    return mamba.resolve_dt_rank(self.dt_rank, self.d_model)

  @property
  def block_pattern(self) -> tuple[str, ...]:
    """The block kinds of the model, in order."""
    return families.block_pattern(self.family, self.n_layer, self.pattern)

  @property
  def position_embedding(self) -> str:
    """"learned" or "none", with the family default filled in."""
    return self.pos_emb or families.default_pos_emb(self.family)

  @property
  def uses_positions(self) -> bool:
    """Whether the model adds a learned position table to its tokens."""
    return self.position_embedding == families.POS_LEARNED

  @property
  def init_style(self) -> str:
    """The init style the blocks use (`nn.initializers.STYLE_*`)."""
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
    return DTYPES[self.dtype]

  @property
  def storage_dtype(self) -> Any:
    return DTYPES[self.param_dtype]

  def block_settings(self) -> blocks.BlockSettings:
    """The hyperparameters every block of this model shares."""
    return blocks.BlockSettings(
        d_model=self.d_model, n_layer=self.n_layer, n_head=self.n_head,
        mlp_ratio=self.mlp_ratio, d_state=self.d_state, d_conv=self.d_conv,
        expand=self.expand, dt_rank=self.dt_rank, dt_min=self.dt_min,
        dt_max=self.dt_max, dt_init_floor=self.dt_init_floor,
        scan_impl=self.scan_impl, chunk_size=self.chunk_size,
        attn_impl=self.attn_impl, attn_block_size=self.attn_block_size,
        s4_mamba_dropout=self.s4_mamba_dropout, dropout=self.dropout,
        init_style=self.init_style, norm=self.norm, dtype=self.compute_dtype,
        param_dtype=self.storage_dtype)


def _is_number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_positive_int(name: str, value: Any) -> None:
  if isinstance(value, bool) or not isinstance(value, int):
    raise errors.UserTypeError(f"{name} must be an int, got {value!r}.")
  if value < 1:
    raise errors.UserError(f"{name} must be positive, got {value}.")


def _check_positive_float(name: str, value: Any) -> None:
  if not _is_number(value) or not value > 0:
    raise errors.UserError(f"{name} must be a positive number, got {value!r}.")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
  if value not in choices:
    raise errors.UserError(f"Unknown {name} {value!r}; expected one of "
                           f"{list(choices)}.")
