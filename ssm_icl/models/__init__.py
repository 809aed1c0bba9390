"""ssm_icl.models: ModelConfig, ICLModel and the paper's architectures."""

from ssm_icl.models.backbone import build_model
from ssm_icl.models.backbone import count_params
from ssm_icl.models.backbone import ICLModel
from ssm_icl.models.backbone import scan_layout
from ssm_icl.models.backbone import stack_layers
from ssm_icl.models.backbone import unstack_layers
from ssm_icl.models.config import ModelConfig
from ssm_icl.models.families import block_pattern
from ssm_icl.models.families import FAMILIES
from ssm_icl.models.families import FAMILY_NAMES

__all__ = [
    "FAMILIES",
    "FAMILY_NAMES",
    "ICLModel",
    "ModelConfig",
    "block_pattern",
    "build_model",
    "count_params",
    "scan_layout",
    "stack_layers",
    "unstack_layers",
]
