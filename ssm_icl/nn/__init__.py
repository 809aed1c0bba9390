"""ssm_icl.nn: Flax linen modules with logical axis names.

Every mixer (`MambaMixer`, `CausalSelfAttention`, `S4DMixer`,
`S4MambaMixer`, `MLP`) and `Block` has `init_cache(batch, max_len)`; called
with `cache=` they continue from it and return (output, new cache), the
recurrent (decoding) form.
"""

from ssm_icl.nn.attention import AttentionCache
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
from ssm_icl.nn.layers import norm
from ssm_icl.nn.layers import NormKind
from ssm_icl.nn.layers import rms_norm
from ssm_icl.nn.layers import StatelessCache
from ssm_icl.nn.mamba import MambaCache
from ssm_icl.nn.mamba import MambaMixer
from ssm_icl.nn.s4 import S4DCache
from ssm_icl.nn.s4 import S4DMixer
from ssm_icl.nn.s4 import S4MambaCache
from ssm_icl.nn.s4 import S4MambaMixer

__all__ = [
    "AttentionCache",
    "BLOCKS",
    "Block",
    "BlockSettings",
    "CausalDepthwiseConv1d",
    "CausalSelfAttention",
    "MLP",
    "MambaCache",
    "MambaMixer",
    "NormKind",
    "RULES",
    "S4DCache",
    "S4DMixer",
    "S4MambaCache",
    "S4MambaMixer",
    "StatelessCache",
    "dense",
    "get_block",
    "get_rules",
    "layer_norm",
    "norm",
    "rms_norm",
]
