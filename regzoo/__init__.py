"""regzoo: RegNet image classifiers, exactly compatible with the published checkpoints."""
from .design import RegNetCfg, StageSpec, make_stages
from .registry import create_model, is_model, list_models, model_entrypoint, register_model, split_model_name_tag
from .regnet import RegNet
from . import variants  # noqa: F401  (registers the architectures)
from .variants import MODEL_CFGS

__version__ = '0.1.0'
