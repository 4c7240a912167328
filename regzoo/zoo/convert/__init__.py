"""Checkpoint conversion: any published RegNet key layout -> ours (which is timm's).

``to_regzoo(checkpoint)`` unwraps the training container, detects the layout from the keys and
renames. One module per source layout, each with ``looks_like(keys)`` and ``convert(state_dict)``:
``timm`` (identity), ``torchvision``, ``hf`` (transformers), ``pycls`` (flips the stem to RGB),
``classy`` (classy_vision / vissl SEER).

Containers, outermost first: ``classy_state_dict.base_model.model.{trunk,heads}`` (vissl);
an EMA copy (``state_dict_ema`` timm, ``model_ema`` torchvision/DeiT, ``ema_state`` pycls);
``state_dict``, ``model``, ``model_state`` (pycls ``.pyth``); then ``module.`` (DataParallel, DDP,
torch's AveragedModel) and ``_orig_mod.`` (torch.compile) prefixes.

EMA wins by default: the recipes that keep one (timm, torchvision) evaluate and publish the EMA
weights, and timm's ``load_checkpoint`` prefers it too. Pass ``use_ema=False`` for the raw weights.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping

import torch

from regzoo.utils.names import did_you_mean
from regzoo.zoo.convert import classy, hf, pycls, timm, torchvision

_LOGGER = logging.getLogger(__name__)
# detection order: the most specific layouts first (pycls and timm share 'stem.conv.weight')
CONVERTERS = {m.NAME: m for m in (hf, torchvision, classy, pycls, timm)}
FORMATS = tuple(CONVERTERS)
EMA_KEYS = ('state_dict_ema', 'model_ema', 'ema_state')
CONTAINER_KEYS = ('state_dict', 'model', 'model_state')
WRAPPER_PREFIXES = ('module.', '_orig_mod.')
# torch.optim.swa_utils.AveragedModel (torchvision's EMA) keeps its update count next to the weights
AVERAGED_MODEL_COUNTER = 'n_averaged'


def _is_state_dict(obj) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def _flatten(tree: Mapping, prefix: str = '') -> dict[str, object]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f'{prefix}{key}.'))
        else:
            out[f'{prefix}{key}'] = value
    return out


def _describe(obj) -> str:
    if isinstance(obj, Mapping):
        keys = list(obj)
        return f'a mapping with {len(keys)} key(s), e.g. {keys[:8]}'
    return f'a {type(obj).__name__}'


def _unwrap_classy(checkpoint: Mapping) -> dict[str, object]:
    try:
        model = checkpoint['classy_state_dict']['base_model']['model']
    except (KeyError, TypeError):
        raise ValueError("classy/vissl checkpoint: expected checkpoint['classy_state_dict']['base_model']['model'] "
                         f"with 'trunk' (and 'heads'); got {_describe(checkpoint['classy_state_dict'])}") from None
    if not isinstance(model, Mapping) or 'trunk' not in model:
        raise ValueError(f"classy/vissl checkpoint: base_model.model has no 'trunk'; got {_describe(model)}")
    return _flatten({k: model[k] for k in ('trunk', 'heads') if k in model})


def unwrap_checkpoint(checkpoint: Mapping, use_ema: bool = True) -> dict[str, torch.Tensor]:
    """The weights inside a training checkpoint (see the module docstring for which container wins)."""
    obj, path = checkpoint, 'checkpoint'
    for _ in range(4):  # real containers nest at most two deep
        if not isinstance(obj, Mapping):
            break
        if 'classy_state_dict' in obj:
            obj, path = _unwrap_classy(obj), f"{path}['classy_state_dict'] (trunk + heads)"
        if _is_state_dict(obj):
            break
        candidates = (EMA_KEYS if use_ema else ()) + CONTAINER_KEYS
        key = next((k for k in candidates if isinstance(obj.get(k), Mapping) and obj[k]), None)
        if key is None:
            break
        obj, path = obj[key], f'{path}[{key!r}]'
    if not isinstance(obj, Mapping) or not obj:
        raise ValueError(f'no state dict found: {path} is {_describe(obj)}; expected tensors by name, or one of '
                         f'the containers {list(EMA_KEYS + CONTAINER_KEYS)}')
    state_dict = dict(obj)
    if AVERAGED_MODEL_COUNTER in state_dict and any(k.startswith('module.') for k in state_dict):
        state_dict.pop(AVERAGED_MODEL_COUNTER)
    not_tensors = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ValueError(f'{path} is not a state dict: {len(not_tensors)} value(s) are not tensors, e.g. '
                         f'{not_tensors[:5]}; expected tensors by name, or one of the containers '
                         f'{list(EMA_KEYS + CONTAINER_KEYS)}')
    for prefix in WRAPPER_PREFIXES:
        if all(k.startswith(prefix) for k in state_dict):
            state_dict = {k.removeprefix(prefix): v for k, v in state_dict.items()}
    _LOGGER.info('using the weights at %s', path)
    return state_dict


def detect_format(state_dict: Mapping[str, torch.Tensor]) -> str:
    """The source layout of an unwrapped state dict, from its keys; unknown layouts raise."""
    keys = set(state_dict)
    for name, module in CONVERTERS.items():
        if module.looks_like(keys):
            return name
    raise ValueError(
        f'unrecognised checkpoint layout ({len(keys)} keys, e.g. {sorted(keys)[:8]}). Known RegNet layouts: '
        "timm/regzoo 's1.b1.conv1.conv.weight', torchvision 'trunk_output.block1.block1-0...', "
        "HF transformers 'regnet.embedder.embedder.convolution.weight', pycls 's1.b1.f.a.weight', "
        "classy/vissl 'classy_state_dict' / '_feature_blocks...'. Pass source_format= to force one.")


def to_regzoo(
        checkpoint: Mapping, source_format: str | None = None, *, use_ema: bool = True,
) -> tuple[dict[str, torch.Tensor], str]:
    """Convert a loaded checkpoint (any container, any known layout) to our keys.

    Args:
        checkpoint: what ``torch.load(weights_only=True)`` / ``safetensors.torch.load_file`` returned.
        source_format: one of ``FORMATS``; None detects it from the keys.
        use_ema: take the EMA copy when the container has one.

    Returns:
        (state dict in our layout, the source format name). pycls weights come back RGB-ordered.
    """
    if source_format is not None and source_format not in CONVERTERS:
        raise ValueError(f'unknown source_format {source_format!r}{did_you_mean(source_format, FORMATS, n=2)}'
                         f' (valid: {", ".join(FORMATS)})')
    state_dict = unwrap_checkpoint(checkpoint, use_ema=use_ema)
    fmt = source_format or detect_format(state_dict)
    return CONVERTERS[fmt].convert(state_dict), fmt


__all__ = ['FORMATS', 'detect_format', 'to_regzoo', 'unwrap_checkpoint']
