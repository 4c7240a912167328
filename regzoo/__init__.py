"""regzoo: RegNet image classifiers, exactly compatible with the published checkpoints."""
from .design import RegNetCfg, StageSpec, make_stages
from .registry import create_model, is_model, list_models, model_entrypoint, register_model, split_model_name_tag
from .regnet import RegNet
from .features import FeatureInfo, FeatureListNet
from . import variants  # noqa: F401  (registers the architectures)
from .variants import MODEL_CFGS
from .complexity import complexity, measure_complexity
from . import design_space
from .pretrained import PretrainedCfg, get_pretrained_cfg, list_pretrained
from .loading import load_checkpoint
from .saving import save_pretrained
from .data import DataConfig, create_transform, resolve_data_config
from .inference import optimize_for_inference

__version__ = '0.1.0'
