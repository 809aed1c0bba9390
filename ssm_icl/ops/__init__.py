"""Pure-JAX sequence ops: linear scans, S6 selective scan, S4D, attention.

Functions of arrays and plain Python options only (no flax, no configs).
`__all__` is what an outside user calls; the submodules hold the rest.

`ssm_icl.ops.selective_scan` is the *module* (so the Google-style
`from ssm_icl.ops import selective_scan as selective_scan_lib` keeps working);
the function is `ssm_icl.ops.selective_scan.selective_scan`. Every other public
function is re-exported here under its own name.
"""

from ssm_icl.ops import selective_scan
from ssm_icl.ops.attention import AttnImpl
from ssm_icl.ops.attention import cached_attention
from ssm_icl.ops.attention import causal_attention
from ssm_icl.ops.flops import model_flops
from ssm_icl.ops.flops import param_count
from ssm_icl.ops.s4d import causal_conv_fft
from ssm_icl.ops.s4d import s4d_kernel
from ssm_icl.ops.s4d import s4d_recurrence
from ssm_icl.ops.scan import linear_scan
from ssm_icl.ops.scan import ScanImpl
from ssm_icl.ops.selective_scan import selective_scan_naive

__all__ = [
    "AttnImpl",
    "ScanImpl",
    "cached_attention",
    "causal_attention",
    "causal_conv_fft",
    "linear_scan",
    "model_flops",
    "param_count",
    "s4d_kernel",
    "s4d_recurrence",
    "selective_scan",
    "selective_scan_naive",
]
