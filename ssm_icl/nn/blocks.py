"""Pre-norm residual blocks and the registry of mixer kinds.

A block is `x + Mixer(LayerNorm(x))`. The Mamba reference writes its blocks
in "Add -> LN -> Mixer" form: block i receives (h_{i-1}, r_{i-1}), computes
r_i = h_{i-1} + r_{i-1} and h_i = Mixer(LN(r_i)), and the model ends with
LN_f(h_last + r_last). Unrolling it, r_i is exactly the residual stream of a
pre-norm network, and the final add + LN is the pre-norm network's final LN,
so both forms compute the same function; this module uses the pre-norm form
for every family. GPT-2 blocks (LN -> attention -> add, LN -> MLP -> add)
are two blocks here: "attn" then "mlp".

Each mixer takes its hyperparameters as one frozen sub-config, defined next
to it: `mamba.MambaConfig`, `attention.AttentionConfig`, `s4.S4Config`,
`layers.MlpConfig`. `MixerConfigs` holds one of each, and `BlockSettings`
adds what every block of a model shares (width, depth, norm, dtypes).
Adding a block hyperparameter is adding a field to one sub-config; the flat
keys of `ModelConfig` (`d_state`, `n_head`, ...) are the sub-configs' field
names, routed here (`MixerConfigs.replace_flat`).

`BLOCKS` maps a `BlockKind` to a factory `(settings, name) -> mixer module`;
`get_block(kind)` looks it up with an error listing the valid kinds.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Callable, Mapping, Union

from flax import linen as nn
import jax
import jax.numpy as jnp

from ssm_icl import errors
from ssm_icl.nn import attention
from ssm_icl.nn import axes
from ssm_icl.nn import initializers as inits
from ssm_icl.nn import layers
from ssm_icl.nn import mamba
from ssm_icl.nn import s4

Dtype = Any


class BlockKind(enum.StrEnum):
  """The mixer of a block (a name in a model's block pattern)."""
  MAMBA = "mamba"
  ATTN = "attn"
  MLP = "mlp"
  S4D = "s4d"
  S4_MAMBA = "s4_mamba"


def parse_kind(kind: Union[BlockKind, str]) -> BlockKind:
  """A `BlockKind` from itself or its value.

  Raises:
    UserError: naming the bad kind and the valid ones.
  """
  return errors.parse_enum("block kind", kind, BlockKind)


@dataclasses.dataclass(frozen=True)
class MixerConfigs:
  """One hyperparameter sub-config per mixer family (hashable, static).

  A field name shared by several sub-configs (`d_state`, `dt_min`, ... of
  `mamba.SSMConfig`) is one flat key of `ModelConfig` that sets all of
  them; the sub-configs can still be given apart (e.g. a different d_state
  for the S4 blocks of a custom pattern).

  Attributes:
    mamba: hyperparameters of the "mamba" blocks.
    attention: hyperparameters of the "attn" blocks.
    s4: hyperparameters of the "s4d" and "s4_mamba" blocks.
    mlp: hyperparameters of the "mlp" blocks.
  """
  mamba: mamba.MambaConfig = mamba.MambaConfig()
  attention: attention.AttentionConfig = attention.AttentionConfig()
  s4: s4.S4Config = s4.S4Config()
  mlp: layers.MlpConfig = layers.MlpConfig()

  def __post_init__(self):
    for f in dataclasses.fields(self):
      value = getattr(self, f.name)
      kind = _SUB_CONFIGS[f.name]
      if isinstance(value, Mapping):  # e.g. from a config.json
        value = _build(kind, f.name, value)
        object.__setattr__(self, f.name, value)
      if not isinstance(value, kind):
        raise errors.UserTypeError(
            f"mixers.{f.name} must be a {kind.__name__} or a mapping of its "
            f"fields, got {value!r}.")

  @classmethod
  def from_mapping(cls, value: Mapping[str, Any]) -> "MixerConfigs":
    """From {"mamba": MambaConfig or a mapping of its fields, ...}.

    Raises:
      UserError: on a name that is not a sub-config, or invalid fields.
    """
    unknown = sorted(str(k) for k in value if k not in _SUB_CONFIGS)
    if unknown:
      raise errors.UserError(f"Unknown mixers keys {unknown}; expected names "
                             f"from {list(_SUB_CONFIGS)}.")
    return cls(**value)

  @classmethod
  def flat_keys(cls) -> tuple[str, ...]:
    """Every hyperparameter name of the sub-configs, sorted."""
    return tuple(sorted({f.name for kind in _SUB_CONFIGS.values()
                         for f in dataclasses.fields(kind)}))

  def _owners(self, key: str) -> list[str]:
    return [name for name, kind in _SUB_CONFIGS.items()
            if key in {f.name for f in dataclasses.fields(kind)}]

  def replace_flat(self, values: Mapping[str, Any]) -> "MixerConfigs":
    """A copy with each flat key set in every sub-config that has it.

    Raises:
      UserError: on a key that no sub-config has, or an invalid value.
    """
    unknown = sorted(str(k) for k in values if not self._owners(k))
    if unknown:
      raise errors.UserError(f"Unknown block hyperparameters {unknown}; "
                             f"valid ones are {list(self.flat_keys())}.")
    changes = {}
    for name in _SUB_CONFIGS:
      own = {k: v for k, v in values.items() if name in self._owners(k)}
      if own:
        changes[name] = dataclasses.replace(getattr(self, name), **own)
    return dataclasses.replace(self, **changes)

  def flat_value(self, key: str) -> Any:
    """The value of flat key `key`, which all sub-configs with it share.

    Raises:
      AttributeError: if no sub-config has `key`.
      UserError: if the sub-configs that have it disagree (read it from one
        of them, e.g. `mixers.s4.d_state`).
    """
    owners = self._owners(key)
    if not owners:
      raise AttributeError(key)
    values = {name: getattr(getattr(self, name), key) for name in owners}
    if len(set(values.values())) > 1:
      raise errors.UserError(
          f"{key} differs between the block sub-configs ({values}); read it "
          f"from one of them, e.g. mixers.{owners[0]}.{key}.")
    return values[owners[0]]

  def to_dict(self) -> dict[str, Any]:
    """The flat keys, JSON-friendly (enums as their values).

    A key the sub-configs disagree on is left out of the flat part and
    written under "mixers" ({"s4": {"d_state": 8}, ...}), which
    `ModelConfig` reads back.
    """
    flat, nested = {}, {}
    for key in self.flat_keys():
      try:
        flat[key] = _plain(self.flat_value(key))
      except errors.UserError:
        for name in self._owners(key):
          nested.setdefault(name, {})[key] = _plain(
              getattr(getattr(self, name), key))
    if nested:
      flat["mixers"] = nested
    return flat


def _build(kind: type, name: str, fields: Mapping[str, Any]) -> Any:
  valid = {f.name for f in dataclasses.fields(kind)}
  unknown = sorted(str(k) for k in fields if k not in valid)
  if unknown:
    raise errors.UserError(f"Unknown mixers.{name} keys {unknown}; valid keys "
                           f"are {sorted(valid)}.")
  return kind(**fields)


def _plain(value: Any) -> Any:
  return value.value if isinstance(value, enum.Enum) else value


# The sub-config class of each MixerConfigs field (the type of its default).
_SUB_CONFIGS: dict[str, type] = {
    f.name: type(f.default) for f in dataclasses.fields(MixerConfigs)}


@dataclasses.dataclass(frozen=True)
class BlockSettings:
  """What every block of a model shares (hashable, static).

  Attributes:
    d_model: residual width D.
    n_layer: the config's n_layer (used by the residual init scalings).
    mixers: the per-family hyperparameters (`MixerConfigs`).
    dropout: dropout on every block's output before the residual add.
    init_style: an `inits.InitStyle` (or its value).
    norm: the block norm, a `layers.NormKind` (or its value).
    dtype: compute dtype.
    param_dtype: parameter storage dtype.
  """
  d_model: int
  n_layer: int = 1
  mixers: MixerConfigs = MixerConfigs()
  dropout: float = 0.0
  init_style: inits.InitStyle = inits.STYLE_MAMBA
  norm: layers.NormKind = layers.NormKind.LAYER
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def __post_init__(self):
    object.__setattr__(self, "init_style", inits.check_style(self.init_style))
    object.__setattr__(self, "norm", layers.parse_norm(self.norm))


MixerFactory = Callable[[BlockSettings, str], nn.Module]


def _mamba(s: BlockSettings, name: str) -> nn.Module:
  return mamba.MambaMixer(
      d_model=s.d_model, config=s.mixers.mamba, n_layer=s.n_layer,
      dtype=s.dtype, param_dtype=s.param_dtype, name=name)


def _attn(s: BlockSettings, name: str) -> nn.Module:
  return attention.CausalSelfAttention(
      d_model=s.d_model, config=s.mixers.attention, n_layer=s.n_layer,
      init_style=s.init_style, dtype=s.dtype, param_dtype=s.param_dtype,
      name=name)


def _mlp(s: BlockSettings, name: str) -> nn.Module:
  return layers.MLP(
      d_model=s.d_model, config=s.mixers.mlp, n_layer=s.n_layer,
      init_style=s.init_style, dtype=s.dtype, param_dtype=s.param_dtype,
      name=name)


def _s4d(s: BlockSettings, name: str) -> nn.Module:
  return s4.S4DMixer(
      d_model=s.d_model, config=s.mixers.s4, dtype=s.dtype,
      param_dtype=s.param_dtype, name=name)


def _s4_mamba(s: BlockSettings, name: str) -> nn.Module:
  return s4.S4MambaMixer(
      d_model=s.d_model, config=s.mixers.s4, n_layer=s.n_layer,
      dtype=s.dtype, param_dtype=s.param_dtype, name=name)


BLOCKS: dict[BlockKind, MixerFactory] = {
    BlockKind.MAMBA: _mamba,
    BlockKind.ATTN: _attn,
    BlockKind.MLP: _mlp,
    BlockKind.S4D: _s4d,
    BlockKind.S4_MAMBA: _s4_mamba,
}


def get_block(kind: Union[BlockKind, str]) -> MixerFactory:
  """Returns the mixer factory of block kind `kind` (a member or its value).

  Raises:
    UserError: if `kind` is not a `BlockKind`.
  """
  return BLOCKS[parse_kind(kind)]


class Block(nn.Module):
  """Pre-norm residual block: x + Dropout(Mixer(Norm(x))).

  The residual stream keeps the dtype it arrives in: the model makes it
  float32 whatever the compute dtype (the reference's `residual_in_fp32`,
  on by default), since adding many small bfloat16 updates to a bfloat16
  stream would lose them.

  Attributes:
    kind: a `BlockKind` (or its value).
    settings: the model's `BlockSettings`.
  """
  kind: BlockKind
  settings: BlockSettings

  @nn.nowrap
  def init_cache(self, batch: int, max_len: int) -> Any:
    """The mixer's decoding cache at the sequence start (a pytree).

    Args:
      batch: prompts decoded together.
      max_len: the longest sequence (prompt and generated tokens) the cache
        must hold; only attention's key/value cache depends on it.
    """
    return get_block(self.kind)(self.settings, None).init_cache(batch,
                                                                max_len)

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool = True,
               cache: Any = None) -> Any:
    """Maps the residual stream x: [b, l, d_model] to the same shape.

    Args:
      x: [b, l, d_model] residual stream (float32 unless the model turns
        `residual_in_fp32` off).
      deterministic: disables dropout when True.
      cache: optional decoding cache of the mixer (`init_cache`); the block
        then continues from it.

    Returns:
      [b, l, d_model] in x's dtype; with a cache, (output, updated cache).
    """
    s = self.settings
    factory = get_block(self.kind)
    x = nn.with_logical_constraint(x, axes.RESIDUAL)
    h = layers.norm(s.norm, dtype=s.dtype, param_dtype=s.param_dtype,
                    name="norm")(x)
    if cache is None:
      h = factory(s, "mixer")(h, deterministic)
    else:
      h, cache = factory(s, "mixer")(h, deterministic, cache)
    if s.dropout > 0:
      h = nn.Dropout(s.dropout)(h, deterministic=deterministic)
    x = x + h.astype(x.dtype)
    x = nn.with_logical_constraint(x, axes.RESIDUAL)
    return x if cache is None else (x, cache)
