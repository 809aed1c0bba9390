"""ssm_icl.models: ModelConfig, ICLModel and the paper's architectures.

`__all__` is what an outside user calls: build a model from a config, count
and convert its parameters, decode with it. `FAMILY_NAMES` lists the values
of `ModelConfig.family` (the paper's six architectures and "custom"). The
submodules (`backbone`, `config`, `convert`, `families`, `generation`,
`weights_io`) hold the rest.
"""

from ssm_icl.models.backbone import build_model
from ssm_icl.models.backbone import count_params
from ssm_icl.models.backbone import ICLModel
from ssm_icl.models.backbone import ModelCache
from ssm_icl.models.backbone import stack_layers
from ssm_icl.models.backbone import unstack_layers
from ssm_icl.models.config import ModelConfig
from ssm_icl.models.convert import export_state_dict
from ssm_icl.models.convert import hf_mamba_config
from ssm_icl.models.convert import load_state_dict
from ssm_icl.models.families import block_pattern
from ssm_icl.models.families import FAMILY_NAMES
from ssm_icl.models.families import ModelInit
from ssm_icl.models.families import PosEmb
from ssm_icl.models.generation import greedy_generate
from ssm_icl.models.weights_io import load_checkpoint_file
from ssm_icl.models.weights_io import save_safetensors

__all__ = [
    "FAMILY_NAMES",
    "ICLModel",
    "ModelCache",
    "ModelConfig",
    "ModelInit",
    "PosEmb",
    "block_pattern",
    "build_model",
    "count_params",
    "export_state_dict",
    "greedy_generate",
    "hf_mamba_config",
    "load_checkpoint_file",
    "load_state_dict",
    "save_safetensors",
    "stack_layers",
    "unstack_layers",
]
