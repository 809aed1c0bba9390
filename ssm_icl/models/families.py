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
from typing import Callable

from ssm_icl.nn import initializers as inits

POS_LEARNED = "learned"
POS_NONE = "none"
POS_EMBS = (POS_LEARNED, POS_NONE)

CUSTOM = "custom"

# Values of ModelConfig.init: "reference" picks the family's style; the
# others force one style on every family (for controlled comparisons).
INIT_REFERENCE = "reference"
INITS = (INIT_REFERENCE,) + inits.STYLES

Pattern = tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Family:
  """One architecture of the paper.

  Attributes:
    name: the family's config name.
    pattern: n_layer -> tuple of block kinds.
    pos_emb: default position embedding ("learned" or "none").
    init_style: reference initialisation style (`inits.STYLE_*`).
    description: one line for docs and logs.
  """
  name: str
  pattern: Callable[[int], Pattern]
  pos_emb: str
  init_style: str
  description: str


def _hybrid(n_layer: int) -> Pattern:
  return tuple("attn" if i % 2 == 0 else "mamba" for i in range(n_layer))


FAMILIES: dict[str, Family] = {
    "transformer": Family(
        "transformer", lambda n: ("attn", "mlp") * n, POS_LEARNED,
        inits.STYLE_GPT2, "GPT-2: n_layer x (attention, MLP), learned "
        "positions"),
    "mamba": Family(
        "mamba", lambda n: ("mamba",) * n, POS_NONE, inits.STYLE_MAMBA,
        "Mamba: n_layer Mamba blocks, no positions"),
    "s4": Family(
        "s4", lambda n: ("s4d",) * n, POS_NONE, inits.STYLE_MAMBA,
        "S4: n_layer S4D blocks, no positions"),
    "s4_mamba": Family(
        "s4_mamba", lambda n: ("s4_mamba",) * n, POS_NONE, inits.STYLE_MAMBA,
        "S4-Mamba: Mamba blocks with an LTI S4D core"),
    "hybrid": Family(
        "hybrid", _hybrid, POS_LEARNED, inits.STYLE_MAMBA,
        "Standard Hybrid: attention / Mamba alternating, learned positions"),
    "mambaformer": Family(
        "mambaformer", lambda n: ("mamba",) + _hybrid(n), POS_NONE,
        inits.STYLE_MAMBA,
        "MambaFormer: leading Mamba block, then attention / Mamba "
        "alternating, no positions"),
}

FAMILY_NAMES = tuple(FAMILIES) + (CUSTOM,)


def parse_pattern(pattern: str | tuple[str, ...] | list[str]) -> Pattern:
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
    A tuple of block kinds (keys of `ssm_icl.nn.blocks.BLOCKS`).

  Raises:
    ValueError: unknown family, or a custom family without a pattern.
  """
  if family == CUSTOM:
    if pattern is None:
      raise ValueError("family='custom' needs a pattern, e.g. "
                       "pattern='mamba,attn,mlp'.")
    return parse_pattern(pattern)
  return _family(family).pattern(n_layer)


def default_pos_emb(family: str) -> str:
  """The family's position embedding ("learned" or "none"; custom: none)."""
  if family == CUSTOM:
    return POS_NONE
  return _family(family).pos_emb


def init_style(family: str, init: str = INIT_REFERENCE) -> str:
  """The init style of a family under `ModelConfig.init`.

  Args:
    family: a name in `FAMILY_NAMES`.
    init: "reference" (the family's own style; custom models use the
      Mamba-family style) or a style name forced on every family.

  Returns:
    `inits.STYLE_GPT2` or `inits.STYLE_MAMBA`.
  """
  if init != INIT_REFERENCE:
    if init not in inits.STYLES:
      raise ValueError(f"Unknown init {init!r}; expected one of {list(INITS)}.")
    return init
  if family == CUSTOM:
    return inits.STYLE_MAMBA
  return _family(family).init_style


def position_std(style: str) -> float:
  """Std of the learned position table: GPT-2 0.02, nn.Embedding 1.0."""
  return inits.GPT2_STD if inits.check_style(style) == inits.STYLE_GPT2 else 1.0
