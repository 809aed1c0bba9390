"""ssm_icl.nn: Flax linen modules with logical axis names.

Each mixer takes its hyperparameters as one frozen sub-config defined next to
it (`MambaMixer(d_model, config=MambaConfig(...))`, `CausalSelfAttention` /
`AttentionConfig`, `S4DMixer` and `S4MambaMixer` / `S4Config`, `MLP` /
`MlpConfig`); `Block` wraps any of them, chosen by `BlockKind`, in a pre-norm
residual block configured by `BlockSettings`.

Every mixer and `Block` has `init_cache(batch, max_len)`; called with
`cache=` they continue from it and return (output, new cache), the recurrent
(decoding) form.

`__all__` is what an outside user calls; the submodules (`layers`, `axes`,
`initializers`, ...) hold the building blocks the modules are made of.
"""

from ssm_icl.nn.attention import AttentionCache
from ssm_icl.nn.attention import AttentionConfig
from ssm_icl.nn.attention import CausalSelfAttention
from ssm_icl.nn.axes import get_rules
from ssm_icl.nn.blocks import Block
from ssm_icl.nn.blocks import BlockKind
from ssm_icl.nn.blocks import BlockSettings
from ssm_icl.nn.blocks import get_block
from ssm_icl.nn.blocks import MixerConfigs
from ssm_icl.nn.initializers import InitStyle
from ssm_icl.nn.layers import CausalDepthwiseConv1d
from ssm_icl.nn.layers import MLP
from ssm_icl.nn.layers import MlpConfig
from ssm_icl.nn.layers import norm
from ssm_icl.nn.layers import NormKind
from ssm_icl.nn.layers import StatelessCache
from ssm_icl.nn.mamba import MambaCache
from ssm_icl.nn.mamba import MambaConfig
from ssm_icl.nn.mamba import MambaMixer
from ssm_icl.nn.s4 import S4Config
from ssm_icl.nn.s4 import S4DCache
from ssm_icl.nn.s4 import S4DMixer
from ssm_icl.nn.s4 import S4MambaCache
from ssm_icl.nn.s4 import S4MambaMixer

__all__ = [
    "AttentionCache",
    "AttentionConfig",
    "Block",
    "BlockKind",
    "BlockSettings",
    "CausalDepthwiseConv1d",
    "CausalSelfAttention",
    "InitStyle",
    "MLP",
    "MambaCache",
    "MambaConfig",
    "MambaMixer",
    "MixerConfigs",
    "MlpConfig",
    "NormKind",
    "S4Config",
    "S4DCache",
    "S4DMixer",
    "S4MambaCache",
    "S4MambaMixer",
    "StatelessCache",
    "get_block",
    "get_rules",
    "norm",
]
