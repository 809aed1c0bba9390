"""ssm_icl.nn: Flax linen modules with logical axis names."""

from ssm_icl.nn.attention import CausalSelfAttention
from ssm_icl.nn.axes import get_rules
from ssm_icl.nn.axes import RULES
from ssm_icl.nn.blocks import Block
from ssm_icl.nn.blocks import BLOCKS
from ssm_icl.nn.blocks import BlockSettings
from ssm_icl.nn.blocks import get_block
from ssm_icl.nn.layers import CausalDepthwiseConv1d
from ssm_icl.nn.layers import Dense
from ssm_icl.nn.layers import LayerNorm
from ssm_icl.nn.layers import MLP
from ssm_icl.nn.mamba import MambaMixer
from ssm_icl.nn.s4 import S4DMixer
from ssm_icl.nn.s4 import S4MambaMixer

__all__ = [
    "BLOCKS",
    "Block",
    "BlockSettings",
    "CausalDepthwiseConv1d",
    "CausalSelfAttention",
    "Dense",
    "LayerNorm",
    "MLP",
    "MambaMixer",
    "RULES",
    "S4DMixer",
    "S4MambaMixer",
    "get_block",
    "get_rules",
]
