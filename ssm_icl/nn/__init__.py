"""ssm_icl.nn: Flax linen modules with logical axis names."""

from ssm_icl.nn.attention import CausalSelfAttention
from ssm_icl.nn.axes import get_rules
from ssm_icl.nn.axes import RULES
from ssm_icl.nn.blocks import Block
from ssm_icl.nn.blocks import BLOCKS
from ssm_icl.nn.blocks import BlockSettings
from ssm_icl.nn.blocks import get_block
from ssm_icl.nn.layers import CausalDepthwiseConv1d
from ssm_icl.nn.layers import dense
from ssm_icl.nn.layers import layer_norm
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
    "MLP",
    "MambaMixer",
    "RULES",
    "S4DMixer",
    "S4MambaMixer",
    "dense",
    "get_block",
    "get_rules",
    "layer_norm",
]
