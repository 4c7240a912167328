"""Hugging Face hub names: what ``create_model('facebook/regnet-y-040')`` or ``create_model('hf-hub:ORG/REPO')`` builds.

Three kinds of repo:

* HF transformers' own RegNet repos (``regzoo.zoo.hf_repos.HF_REPOS``: ``facebook/regnet-y-040``, the SEER
  ones), with or without the ``hf-hub:`` prefix: the registered arch and the weight each repo is a copy of.
  Without ``pretrained=True`` nothing is read; with it, the repo's ``config.json`` (its stages are checked
  against the arch's, its ``id2label`` become the label names) and its weights.
* ``hf-hub:ORG/REPO`` in timm's layout (a config.json naming an ``architecture``), with timm's meaning: the
  architecture, ``num_classes``, ``pretrained_cfg`` and ``model_args`` of its config.json, then its weights.
* ``hf-hub:ORG/REPO`` in HF transformers' layout (``model_type: regnet``) not in the table: the registered arch
  whose stages equal the config's, else a net built from the config's explicit stages (``hidden_sizes``,
  ``depths``, ``groups_width``, ``layer_type``, ``embedding_size``, ``hidden_act``); its eval transform is its
  ``preprocessor_config.json``'s when it has one (``regzoo.zoo.hf_processor``).

config.json comes from the HF cache when it is there; otherwise, as weights do (``regzoo.zoo.fetch``): never
with ``HF_HUB_OFFLINE`` set, else after one quick connection probe, downloaded. ``ORG/REPO@revision`` is not
supported: the cache is read at its ``main`` ref.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from regzoo.models.design import RegNetCfg, make_stages
from regzoo.utils.names import did_you_mean
from regzoo.zoo.cfgs import MODEL_CFGS
from regzoo.zoo.convert import hf
from regzoo.zoo.config import config_model_args, config_pretrained_cfg, read_config, with_label_names
from regzoo.zoo.fetch import WeightsUnavailableError, fetch_pretrained, hub_cache, hub_offline
from regzoo.zoo.hf_processor import PROCESSOR_NAME, read_processor, with_processor
from regzoo.zoo.hf_repos import HF_REPOS, HUB_PREFIX, hf_repo_cfg, hf_repo_of
from regzoo.zoo.layout import CONFIG_NAME
from regzoo.zoo.pretrained import PretrainedCfg
from regzoo.zoo.registry import REGISTRY, UnknownModelError

# RegNetCfg fields besides the stages that decide a net's modules: equal stages and equal options, equal net
_BLOCK_FIELDS = ('bottle_ratio', 'se_ratio', 'stem_width', 'downsample', 'linear_out', 'preact', 'num_features',
                 'act', 'norm')
_FACEBOOK_REGNET = 'facebook/regnet-'  # every public repo under it is in HF_REPOS

@dataclass(frozen=True)
class HubModel:
    """What a hub name builds: ``arch`` (a registered one, or the hub name itself when ``cfg`` is given)."""
    arch: str
    cfg: RegNetCfg | None          # the repo's explicit stages when no registered arch has them; None: arch's own
    pretrained_cfg: PretrainedCfg  # loads from the repo (hf_hub_id)
    # build kwargs the repo's config.json records (timm's model_args)
    model_args: Mapping = field(default_factory=lambda: MappingProxyType({}))


def is_hub_name(name) -> bool:
    """``hf-hub:ORG/REPO`` or a bare ``ORG/REPO``: registered names never hold a '/'."""
    return isinstance(name, str) and (name.startswith(HUB_PREFIX) or '/' in name)


def resolve_hub_name(name: str, pretrained: bool = False, cache_dir: str | os.PathLike | None = None) -> HubModel:
    """What the hub name ``name`` builds (see the module docstring); reads config.json only when it must."""
    repo = name.removeprefix(HUB_PREFIX)
    if '@' in repo:
        raise ValueError(f"{name}: a revision ('@...') is not supported; name the repo alone, its cache is read "
                         'at its main ref')
    if hf_repo_of(name):
        return _hf_transformers_repo(name, repo, pretrained, cache_dir)
    if repo.startswith(_FACEBOOK_REGNET):
        raise UnknownModelError(f"unknown Hugging Face repo {repo!r}: HF transformers' RegNet repos are "
                                f"facebook/regnet-{{x,y}}-NNN and the SEER ones{did_you_mean(repo, HF_REPOS, n=5)}")
    if not name.startswith(HUB_PREFIX):
        raise UnknownModelError(f"unknown model {name!r}: for a Hugging Face hub repo write 'hf-hub:{name}'")
    if repo.count('/') != 1 or not all(repo.split('/')):
        raise ValueError(f"{name}: a hub name is 'hf-hub:ORG/REPO'")
    config = read_repo_config(name, repo, cache_dir)
    if config.get('architecture'):
        return _timm_repo(name, repo, config)
    if config.get('model_type') == 'regnet':
        hub = _hf_config_repo(name, repo, config)  # its eval transform: its preprocessor_config.json, if any
        return dataclasses.replace(hub, pretrained_cfg=with_processor(
            hub.pretrained_cfg, read_repo_processor(name, repo, cache_dir), f'{repo}/{PROCESSOR_NAME}'))
    raise ValueError(f"{name}: its config.json is neither timm's (no 'architecture') nor an HF transformers RegNet's "
                     f"(model_type {config.get('model_type')!r}, not 'regnet')")


def read_repo_config(name: str, repo: str, cache_dir: str | os.PathLike | None = None) -> dict:
    """A hub repo's config.json: from the HF cache, else (unless offline) downloaded; one-line errors."""
    probe = PretrainedCfg(name, CONFIG_NAME, hf_hub_id=repo, hf_hub_filename=CONFIG_NAME, label_set=None)
    try:
        path, _ = fetch_pretrained(probe, cache_dir)
    except WeightsUnavailableError as e:  # its full text (every path and host tried) stays chained
        why = 'and HF_HUB_OFFLINE is set' if hub_offline() else 'and it could not be downloaded'
        raise WeightsUnavailableError(
            f'{name}: {repo}/{CONFIG_NAME} is not in the HF cache {hub_cache(cache_dir)} {why}; run '
            f'`hf download {repo}` on a machine with network and copy its cache there', name, e.offline) from e
    return read_config(Path(path))


def read_repo_processor(name: str, repo: str, cache_dir: str | os.PathLike | None = None) -> dict | None:
    """A hub repo's ``preprocessor_config.json`` (optional) from the HF cache, else downloaded; None without one."""
    probe = PretrainedCfg(name, PROCESSOR_NAME, hf_hub_id=repo, hf_hub_filename=PROCESSOR_NAME, label_set=None)
    try:
        return read_processor(fetch_pretrained(probe, cache_dir)[0].parent)
    except WeightsUnavailableError:
        return None


def _hf_transformers_repo(name: str, repo: str, pretrained: bool, cache_dir) -> HubModel:
    try:
        cfg = hf_repo_cfg(repo)
    except ValueError as e:
        raise UnknownModelError(f'{e} yet') from None
    if not pretrained:  # the table says it all; the repo is read only for its weights
        return HubModel(cfg.arch, None, cfg)
    config = read_repo_config(name, repo, cache_dir)
    stages, base = _hf_regnet_cfg(name, config), MODEL_CFGS.get(cfg.arch)
    if base is not None and not _same_net(base, stages):  # a wrong config.json would load into the wrong net
        raise ValueError(f'{name}: its config.json describes {_describe(stages)}, not {cfg.arch} '
                         f'({_describe(base)}), whose weight {cfg.name} the repo holds')
    return HubModel(cfg.arch, None, with_label_names(cfg, config))


def _hf_regnet_cfg(name: str, config: Mapping) -> RegNetCfg:
    try:
        return hf.regnet_cfg(config)
    except ValueError as e:
        raise ValueError(f'{name}: {e}') from None


def _timm_repo(name: str, repo: str, config: Mapping) -> HubModel:
    """timm's ``load_model_config_from_hf``: the config's architecture, pretrained_cfg, num_classes, model_args."""
    arch = config['architecture']
    if arch not in REGISTRY.names():
        raise UnknownModelError(f'{name}: its config.json names architecture {arch!r}, which is no regzoo model'
                                f'{did_you_mean(arch, REGISTRY.names())}')
    saved = {k: v for k, v in (config.get('pretrained_cfg') or {}).items() if k != 'source'}  # 'hf-hub' there
    # read as a saved folder's config.json is (the head size is the config's: the weights are not read yet)
    config = {**config, 'pretrained_cfg': saved}
    cfg = config_pretrained_cfg(config, arch, num_classes=0) or PretrainedCfg(arch, '', label_set=None)
    if isinstance(config.get('num_classes'), int):  # the top level's, as timm
        cfg = cfg.replace(num_classes=config['num_classes'])
    cfg = cfg.replace(hf_hub_id=repo, hf_hub_filename=None, url=None, file=None, sha256=None, source_format=None)
    return HubModel(arch, None, cfg, MappingProxyType(config_model_args(config)))


def _hf_config_repo(name: str, repo: str, config: Mapping) -> HubModel:
    """An HF transformers RegNet repo not in the table: the registered arch with its stages, else its own cfg."""
    cfg = _hf_regnet_cfg(name, config)
    arch = matching_arch(cfg)
    in_chans = config.get('num_channels', hf.HF_CONFIG_DEFAULTS['num_channels'])
    architectures = config.get('architectures') or ['RegNetForImageClassification']
    id2label = config.get('id2label') or {}
    num_classes = 0 if 'RegNetForImageClassification' not in architectures else len(id2label) or config.get(
        'num_labels', 2)  # transformers' default head has 2 classes
    pretrained_cfg = PretrainedCfg(
        arch or name, '', hf_hub_id=repo, source_format='hf', num_classes=num_classes, label_set=None,
        input_size=(in_chans, *PretrainedCfg.input_size[1:]))
    return HubModel(arch or name, None if arch else cfg, with_label_names(pretrained_cfg, config))


def matching_arch(cfg: RegNetCfg) -> str | None:
    """The first built-in arch whose net equals ``cfg``'s (same stages and block options), or None."""
    return next((arch for arch, base in MODEL_CFGS.items() if arch in REGISTRY.names() and _same_net(base, cfg)),
                None)


def _same_net(a: RegNetCfg, b: RegNetCfg) -> bool:
    return make_stages(a) == make_stages(b) and all(getattr(a, f) == getattr(b, f) for f in _BLOCK_FIELDS)


def _describe(cfg: RegNetCfg) -> str:
    stages = make_stages(cfg)
    return (f'widths {[s.width for s in stages]}, depths {[s.depth for s in stages]}, '
            f'groups {[s.groups for s in stages]}, {"Y (SE)" if cfg.se_ratio else "X"}')
