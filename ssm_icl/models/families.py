"""The paper's six architectures as block patterns (docs/PAPER.md §4).

Depth is counted as in the paper's code (`n_layer` in the configs):

  transformer  ("attn", "mlp") * L, learned positions. A GPT-2 layer is two
               blocks here (attention and MLP, each pre-norm residual).
  mamba        ("mamba",) * L, no positions, no MLP.
  s4           ("s4d",) * L, no positions.
  s4_mamba     ("s4_mamba",) * L, no positions.
  hybrid       "Standard Hybrid": L blocks alternating attention (even index)
               and Mamba (odd index), learned positions: L=4 -> A, M, A, M.
  mambaformer  one leading Mamba block (it replaces the positional encoding)
               + the hybrid pattern, no positions: L=4 -> M, A, M, A, M.
  custom       any user pattern, e.g. "mamba,attn,mlp"; no positions unless
               the config asks for them.

Initialisation differs by family (`init="reference"`):

* transformer: HF GPT-2 inside the backbone (docs/PAPER.md §5.2): N(0, 0.02)
  weights and position table, zero biases, every `c_proj`
  N(0, 0.02 / sqrt(2 * n_layer)).
* all others (Mamba's `MixerModel`, docs/PAPER.md §5.3): PyTorch defaults, every
  Linear bias zeroed (the attention biases of the hybrids included; dt_proj's
  bias keeps its inverse-softplus init), Mamba / S4-Mamba out_proj
  kaiming-uniform / sqrt(n_layer) with the *config* n_layer (so MambaFormer's
  5 blocks at L=4 use 1/sqrt(4)), attention c_proj not rescaled, and the
  hybrid position table N(0, 1) (PyTorch `nn.Embedding` default).
* read-in and read-out are plain PyTorch `nn.Linear` in every family.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Callable, Union

from ssm_icl.nn import blocks
from ssm_icl.nn import initializers as inits


class PosEmb(enum.StrEnum):
  """Position embedding of a model (`ModelConfig.pos_emb`)."""
  LEARNED = "learned"  # a learned [n_positions, d_model] table (GPT-2)
  NONE = "none"


POS_LEARNED = PosEmb.LEARNED
POS_NONE = PosEmb.NONE
POS_EMBS = tuple(PosEmb)

CUSTOM = "custom"


class ModelInit(enum.StrEnum):
  """Values of `ModelConfig.init`.

  REFERENCE picks each family's reference style; GPT2 and MAMBA force that
  `inits.InitStyle` on every family (for controlled comparisons).
  """
  REFERENCE = "reference"
  GPT2 = inits.InitStyle.GPT2.value
  MAMBA = inits.InitStyle.MAMBA.value


INIT_REFERENCE = ModelInit.REFERENCE
INITS = tuple(ModelInit)

Kind = blocks.BlockKind
Pattern = tuple[blocks.BlockKind, ...]


@dataclasses.dataclass(frozen=True)
class Family:
  """One architecture of the paper.

  Attributes:
    name: the family's config name.
    pattern: n_layer -> tuple of block kinds.
    pos_emb: default position embedding.
    init_style: reference initialisation style.
    description: one line for docs and logs.
  """
  name: str
  pattern: Callable[[int], Pattern]
  pos_emb: PosEmb
  init_style: inits.InitStyle
  description: str


def _hybrid(n_layer: int) -> Pattern:
  return tuple(Kind.ATTN if i % 2 == 0 else Kind.MAMBA
               for i in range(n_layer))


FAMILIES: dict[str, Family] = {
    "transformer": Family(
        "transformer", lambda n: (Kind.ATTN, Kind.MLP) * n, POS_LEARNED,
        inits.STYLE_GPT2, "GPT-2: n_layer x (attention, MLP), learned "
        "positions"),
    "mamba": Family(
        "mamba", lambda n: (Kind.MAMBA,) * n, POS_NONE, inits.STYLE_MAMBA,
        "Mamba: n_layer Mamba blocks, no positions"),
    "s4": Family(
        "s4", lambda n: (Kind.S4D,) * n, POS_NONE, inits.STYLE_MAMBA,
        "S4: n_layer S4D blocks, no positions"),
    "s4_mamba": Family(
        "s4_mamba", lambda n: (Kind.S4_MAMBA,) * n, POS_NONE, inits.STYLE_MAMBA,
        "S4-Mamba: Mamba blocks with an LTI S4D core"),
    "hybrid": Family(
        "hybrid", _hybrid, POS_LEARNED, inits.STYLE_MAMBA,
        "Standard Hybrid: attention / Mamba alternating, learned positions"),
    "mambaformer": Family(
        "mambaformer", lambda n: (Kind.MAMBA,) + _hybrid(n), POS_NONE,
        inits.STYLE_MAMBA,
        "MambaFormer: leading Mamba block, then attention / Mamba "
        "alternating, no positions"),
}

FAMILY_NAMES = tuple(FAMILIES) + (CUSTOM,)


def parse_pattern(pattern: str | tuple[str, ...] | list[str]
                  ) -> tuple[str, ...]:
  """Turns "mamba, attn,mlp" or a sequence of names into a tuple of names.

  Raises:
    ValueError: if the pattern is empty or not a string / sequence of strings.
  """
  if isinstance(pattern, str):
    names = tuple(p.strip() for p in pattern.split(","))
  elif isinstance(pattern, (tuple, list)):
    names = tuple(pattern)
  else:
    raise ValueError(f"pattern must be a comma-separated string or a tuple of"
                     f" block names, got {pattern!r}.")
  if not names or any(not isinstance(n, str) or not n for n in names):
    raise ValueError(f"pattern must name at least one block and no empty "
                     f"ones, got {pattern!r}.")
  return names


def _family(name: str) -> Family:
  try:
    return FAMILIES[name]
  except (KeyError, TypeError):
    raise ValueError(f"Unknown family {name!r}; expected one of "
                     f"{list(FAMILY_NAMES)}.") from None


def block_pattern(family: str, n_layer: int,
                  pattern: str | tuple[str, ...] | None = None) -> Pattern:
  """The block kinds of a model, in order.

  Args:
    family: a name in `FAMILY_NAMES`.
    n_layer: the paper's depth count (ignored for "custom").
    pattern: the blocks of a "custom" family.

  Returns:
    A tuple of `nn.blocks.BlockKind`s.

  Raises:
    ValueError: unknown family or block kind, or a custom family without a
      pattern.
  """
  if family == CUSTOM:
    if pattern is None:
      raise ValueError("family='custom' needs a pattern, e.g. "
                       "pattern='mamba,attn,mlp'.")
    return tuple(blocks.parse_kind(k) for k in parse_pattern(pattern))
  return _family(family).pattern(n_layer)


def default_pos_emb(family: str) -> PosEmb:
  """The family's position embedding (custom: none)."""
  if family == CUSTOM:
    return POS_NONE
  return _family(family).pos_emb


def init_style(family: str, init: Union[ModelInit, str] = INIT_REFERENCE
               ) -> inits.InitStyle:
  """The init style of a family under `ModelConfig.init`.

  Args:
    family: a name in `FAMILY_NAMES`.
    init: "reference" (the family's own style; custom models use the
      Mamba-family style) or a style name forced on every family.

  Returns:
    `inits.InitStyle.GPT2` or `inits.InitStyle.MAMBA`.
  """
  if init != INIT_REFERENCE:
    if init not in inits.STYLES:
      raise ValueError(f"Unknown init {init!r}; expected one of "
                       f"{[i.value for i in INITS]}.")
    return inits.InitStyle(init)
  if family == CUSTOM:
    return inits.STYLE_MAMBA
  return _family(family).init_style


def position_std(style: Union[inits.InitStyle, str]) -> float:
  """Std of the learned position table: GPT-2 0.02, nn.Embedding 1.0."""
  return inits.GPT2_STD if inits.check_style(style) == inits.STYLE_GPT2 else 1.0
