"""regzoo: RegNet image classifiers, exactly compatible with the published checkpoints.

The package is layered; each subpackage imports only from the ones listed before it
(``tests/test_layers.py`` enforces this):

    utils     string, file and timing helpers
    models    design math (RegNetCfg -> stages), layers, RegNet, feature taps: pure torch.nn
    data      eval data config and transforms, eval datasets, synthetic images
    zoo       the registry, the architecture factories, the weight table, build/load/save, converters
    analysis  complexity, design spaces, results tables
    eval      the top-k evaluation loop, validate.py's per-weight evaluation, predict (top-k labels per image)
    deploy    export, the inference fast path, int8, the benchmark's measurements
    training  train.py's recipes, loop, checkpoints and DDP
    cli       the command lines: flags and printing over the layers above (``regzoo.cli``'s docstring lists them)

Library code (every layer but ``cli``) never imports ``cli``, nor this root package. The other top-level modules
(``__main__``, ``train``, ``validate``, ``export``, ``benchmark``, ``tables``) are two-line aliases so that
``python -m regzoo[.NAME]`` runs the command ``regzoo.cli.NAME``; predict has none, because ``regzoo.predict`` is
the library function below.
"""
from regzoo.analysis import design_space
from regzoo.analysis.complexity import complexity, measure_complexity
from regzoo.data.transforms import DataConfig, create_transform, resolve_data_config
from regzoo.deploy.engines import optimize_for_inference, quantize
from regzoo.deploy.hub import push_to_hub
from regzoo.eval.predict import Prediction, predict
from regzoo.models.design import RegNetCfg, StageSpec, make_stages
from regzoo.models.features import FeatureInfo, FeatureListNet
from regzoo.models.regnet import RegNet
from regzoo.utils.layer_config import (
    is_exportable,
    is_scriptable,
    set_exportable,
    set_layer_config,
    set_scriptable,
)
from regzoo.zoo import factories  # noqa: F401  (registers the architectures)
from regzoo.zoo.builder import create_model
from regzoo.zoo.card import model_card
from regzoo.zoo.cfgs import MODEL_CFGS
from regzoo.zoo.loading import load_checkpoint
from regzoo.zoo.pretrained import PretrainedCfg
from regzoo.zoo.registry import (
    get_pretrained_cfg,
    get_pretrained_cfg_value,
    is_model,
    list_models,
    list_modules,
    list_pretrained,
    model_entrypoint,
    register_model,
    split_model_name_tag,
)
from regzoo.zoo.saving import save_pretrained

__all__ = [
    'DataConfig', 'FeatureInfo', 'FeatureListNet', 'MODEL_CFGS', 'Prediction', 'PretrainedCfg', 'RegNet', 'RegNetCfg',
    'StageSpec', 'complexity', 'create_model', 'create_transform', 'design_space', 'get_pretrained_cfg',
    'get_pretrained_cfg_value', 'is_exportable', 'is_model', 'is_scriptable', 'list_models', 'list_modules',
    'list_pretrained', 'load_checkpoint', 'make_stages', 'measure_complexity', 'model_card',
    'model_entrypoint', 'optimize_for_inference', 'predict', 'push_to_hub', 'quantize', 'register_model',
    'resolve_data_config', 'save_pretrained',
    'set_exportable', 'set_layer_config', 'set_scriptable', 'split_model_name_tag',
]
__version__ = '0.1.0'
