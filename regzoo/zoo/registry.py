"""Model registry: architecture name -> factory function, plus name aliases from other ecosystems.

All registry state lives in one ``Registry`` object (``REGISTRY``); the module functions are thin
views of it. Names are ``arch`` or ``arch.tag`` (``regnety_032.pycls_in1k``), where ``arch`` may be
an alias (``RegNetY-3.2GF.ra_in1k``): the tag picks a pretrained weight and is resolved by
``regzoo.zoo.pretrained``. ``Registry.canonical_name`` turns any of these into the registered
``arch`` or ``arch.tag``, the name to print and to write into results.
"""
from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable
from typing import Any

import torch.nn as nn

from regzoo.utils.names import did_you_mean, natural_key
from regzoo.zoo import pretrained as _pretrained
from regzoo.zoo.hf_repos import hf_repo_cfg, hf_repo_of
from regzoo.zoo.pretrained_cfg import PretrainedCfg, UnknownTagError

# regzoo's own architectures are timm's `regnet` module's, so list_models(module='regnet') means the same here
_BUILTIN_MODULES = {'regzoo.zoo.factories': 'regnet'}


class UnknownModelError(RuntimeError, ValueError):
    """A name that is no registered architecture or alias: a RuntimeError as timm's create_model raises,
    and a ValueError as regzoo raised before."""


def _module_of(fn: Callable) -> str:
    """timm's module name of an entrypoint: the last part of its module ('regnet' for regzoo's own)."""
    module = getattr(fn, '__module__', None) or ''
    return _BUILTIN_MODULES.get(module, module.rsplit('.', 1)[-1])


class Registry:
    """Architecture name -> factory (and the module it was registered from), and alias -> architecture name.
    Duplicates raise."""

    def __init__(self):
        self._entrypoints: dict[str, Callable[..., nn.Module]] = {}
        self._modules: dict[str, str] = {}
        self._aliases: dict[str, str] = {}

    def register(self, fn: Callable[..., nn.Module], name: str | None = None) -> Callable[..., nn.Module]:
        name = name or fn.__name__
        if name in self._entrypoints or name in self._aliases:
            raise ValueError(f'a model named {name!r} is already registered')
        self._entrypoints[name] = fn
        self._modules[name] = _module_of(fn)
        return fn

    def register_alias(self, alias: str, arch: str) -> None:
        if arch not in self._entrypoints:
            raise ValueError(f'alias {alias!r} points at unknown architecture {arch!r}')
        if alias in self._entrypoints or self._aliases.get(alias, arch) != arch:
            raise ValueError(f'alias {alias!r} is already taken')
        self._aliases[alias] = arch

    def resolve(self, name: str) -> str:
        """The architecture a name or alias refers to; unknown names raise with close matches."""
        if name in self._entrypoints:
            return name
        if name in self._aliases:
            return self._aliases[name]
        raise UnknownModelError(
            f'unknown model {name!r}{did_you_mean(name, [*self._entrypoints, *self._aliases], n=5)} '
            '(see regzoo.list_models())')

    def unregister(self, name: str) -> None:
        """Remove an architecture and its aliases (for throwaway models in notebooks and tests)."""
        if name not in self._entrypoints:
            raise ValueError(f'no architecture named {name!r} is registered; unregister takes an arch, not an alias')
        del self._entrypoints[name]
        self._modules.pop(name, None)
        self._aliases = {alias: arch for alias, arch in self._aliases.items() if arch != name}

    def split(self, name: str, resolve_alias: bool = True) -> tuple[str, str | None]:
        """``name`` -> (registered arch, tag or None): 'RegNetY-3.2GF.ra_in1k' -> ('regnety_032', 'ra_in1k');
        with ``resolve_alias=False`` the arch part as typed: ('RegNetY-3.2GF', 'ra_in1k').

        Aliases may contain dots, so the split is not at the first dot: the longest registered name or
        alias that is all of ``name``, or is followed by '.' and a tag, wins. An unknown name splits at
        its first dot (as timm's ``split_model_name_tag``) and stays as typed, for ``resolve`` to name in its error.
        """
        known = [k for k in (*self._entrypoints, *self._aliases) if name == k or name.startswith(k + '.')]
        if known:
            prefix = max(known, key=len)
            arch, tag = prefix, name[len(prefix) + 1:]
        else:
            arch, _, tag = name.partition('.')
        return (self._aliases.get(arch, arch) if resolve_alias else arch), tag or None

    def canonical_name(self, name: str) -> str:
        """The registered ``arch`` or ``arch.tag`` a typed name means.

        'RegNetY-3.2GF' -> 'regnety_032', 'regnet_y_3_2gf.tv2_in1k' -> 'regnety_032.tv2_in1k'. An unknown
        architecture raises with close matches; the tag is kept as typed (``get_pretrained_cfg`` checks it).
        """
        arch, tag = self.split(name)
        arch = self.resolve(arch)
        return f'{arch}.{tag}' if tag else arch

    def entrypoint(self, name: str) -> Callable[..., nn.Module]:
        return self._entrypoints[self.resolve(name)]

    def names(self) -> list[str]:
        return sorted(self._entrypoints, key=natural_key)

    def module(self, arch: str) -> str:
        """The module name ``arch`` was registered from (timm's ``list_models(module=)``)."""
        return self._modules[arch]

    def modules(self) -> list[str]:
        return sorted(set(self._modules.values()))

    def aliases(self) -> dict[str, str]:
        return dict(self._aliases)


REGISTRY = Registry()


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: register ``fn`` under its ``__name__``."""
    return REGISTRY.register(fn)


def _to_str_list(value: str | Iterable[str] | None) -> list[str]:
    if not value:
        return []
    return [value] if isinstance(value, str) else list(value)


def _expand_filter(pattern: str) -> list[str]:
    """timm: a filter without a tag also matches that name's tags ('regnetx_002' -> 'regnetx_002.*' too)."""
    base, _, tag = pattern.partition('.')
    return [pattern] if tag else [f'{base}.*', pattern]


def split_model_name_tag(model_name: str, no_tag: str = '') -> tuple[str, str]:
    """timm's ``split_model_name_tag``: 'regnety_032.pycls_in1k' -> ('regnety_032', 'pycls_in1k'); no tag -> no_tag.

    Splits at the first dot, as timm, except after a registered alias that contains dots
    ('RegNetY-3.2GF.ra_in1k' -> ('RegNetY-3.2GF', 'ra_in1k')); the arch part is kept as typed.
    """
    arch, tag = REGISTRY.split(model_name, resolve_alias=False)
    return arch, tag or no_tag


def _pretrained_names() -> set[str]:
    """timm's ``_model_has_pretrained``: every registered ``arch.tag`` with weights, and each such ``arch``."""
    archs = set(REGISTRY.names())
    tagged = [cfg for cfg in _pretrained.WEIGHTS.values() if cfg.arch in archs]
    return {cfg.name for cfg in tagged} | {cfg.arch for cfg in tagged}


def _tagged_names(arch: str) -> list[str]:
    """timm's ``_model_with_tags``: ``arch.tag`` of each of its weights, or just ``arch`` without any."""
    return [f'{arch}.{t}' for t in _pretrained.arch_tags(arch)] or [arch]


def list_models(
        filter: str | Iterable[str] = '',
        module: str | Iterable[str] = '',
        pretrained: bool = False,
        exclude_filters: str | Iterable[str] = '',
        name_matches_cfg: bool = False,
        include_tags: bool | None = None,
) -> list[str]:
    """Registered model names, naturally sorted, with timm's semantics (``timm.list_models``).

    Args:
        filter: fnmatch pattern(s) to include.
        module: only archs registered from these module(s); regzoo's own are in 'regnet' (timm's module).
        pretrained: only names with pretrained weights.
        exclude_filters: fnmatch pattern(s) to exclude after including.
        name_matches_cfg: only names that have a pretrained cfg of their own (``arch`` with weights, ``arch.tag``).
        include_tags: list ``arch.tag`` names; default: the value of ``pretrained``. With tags, a filter
            without a tag also matches that name's tags ('regnety_032' matches 'regnety_032.ra_in1k').
    """
    include_filters = _to_str_list(filter)
    exclude = _to_str_list(exclude_filters)
    modules = _to_str_list(module)
    if include_tags is None:
        include_tags = pretrained
    archs = REGISTRY.names()
    names = {a for a in archs if REGISTRY.module(a) in modules} if modules else set(archs)
    if include_tags:
        names = {n for arch in names for n in _tagged_names(arch)}
        include_filters = [f for p in include_filters for f in _expand_filter(p)]
        exclude = [f for p in exclude for f in _expand_filter(p)]
    if include_filters:
        names = {n for n in names if any(fnmatch.fnmatchcase(n, p) for p in include_filters)}
    if exclude:
        names = {n for n in names if not any(fnmatch.fnmatchcase(n, p) for p in exclude)}
    if pretrained or name_matches_cfg:  # in regzoo every cfg is a weight's
        names &= _pretrained_names()
    return sorted(names, key=natural_key)


def list_pretrained(filter: str | Iterable[str] = '', exclude_filters: str | Iterable[str] = '') -> list[str]:
    """Every ``arch.tag`` with weights, naturally sorted (``timm.list_pretrained``).

    A filter without a tag matches that arch's tags: ``list_pretrained('regnetx_002') == ['regnetx_002.pycls_in1k']``.
    """
    return list_models(filter=filter, pretrained=True, exclude_filters=exclude_filters, include_tags=True)


def list_modules() -> list[str]:
    """The module names models were registered from (regzoo's own: 'regnet', as timm's RegNets)."""
    return REGISTRY.modules()


def is_model(model_name: str) -> bool:
    """True for a registered architecture or alias (a tag, if any, is ignored), or an HF transformers RegNet repo
    (``facebook/regnet-y-040``, with or without ``hf-hub:``)."""
    return REGISTRY.split(model_name)[0] in REGISTRY.names() or hf_repo_of(model_name) is not None


def is_model_pretrained(model_name: str) -> bool:
    """True for a registered ``arch`` or ``arch.tag`` that has weights (timm's semantics; aliases resolve)."""
    arch, tag = REGISTRY.split(model_name)
    return (f'{arch}.{tag}' if tag else arch) in _pretrained_names()


def model_entrypoint(model_name: str, module_filter: str | None = None) -> Callable[..., nn.Module]:
    """The factory function of an architecture (tag ignored; aliases resolve).

    An unknown name raises ``UnknownModelError`` with close matches; with ``module_filter``, an arch
    registered from another module raises a RuntimeError, as in timm.
    """
    arch = REGISTRY.resolve(REGISTRY.split(model_name)[0])
    if module_filter and REGISTRY.module(arch) != module_filter:
        raise RuntimeError(f'Model ({model_name} not found in module {module_filter}.')
    return REGISTRY.entrypoint(arch)


def get_pretrained_cfg(model_name: str, allow_unregistered: bool = True) -> PretrainedCfg | None:
    """The cfg of ``arch.tag``, or of the arch's default weight for a bare ``arch`` (timm's ``get_pretrained_cfg``).

    Aliases resolve ('RegNetY-3.2GF.ra_in1k'). A registered arch without weights (a user arch) gives None,
    or with ``allow_unregistered=False`` raises a RuntimeError, as timm. An unknown tag raises
    ``UnknownTagError`` (a RuntimeError, as timm) listing the valid tags. Unlike timm, a name that is no
    registered model at all raises with close matches (timm returns None for a typo).
    The cfg is frozen, so it is returned as is (timm returns a copy). An HF transformers RegNet repo
    (``facebook/regnet-y-040``) gives the cfg of the weight it holds, loading from that repo.
    """
    if repo := hf_repo_of(model_name):
        return hf_repo_cfg(repo)
    arch, tag = REGISTRY.split(model_name)
    if arch not in REGISTRY.names():  # not registered at all: say so, with close matches
        return _pretrained.weight_cfg(model_name)
    if _pretrained.arch_tags(arch):
        return _pretrained.weight_cfg(f'{arch}.{tag}' if tag else arch)
    if tag:
        raise UnknownTagError(
            f'Invalid pretrained tag ({tag}) for {arch}: {arch} has no pretrained weights, so no tags')
    if allow_unregistered:
        return None
    raise RuntimeError(f'Model architecture ({arch}) has no pretrained cfg registered.')


def get_pretrained_cfg_value(model_name: str, cfg_key: str) -> Any:
    """One value of a model's pretrained cfg, None when it has no such key (``timm.models.get_pretrained_cfg_value``).

    timm's keys read as timm has them (``cfg[key]``), regzoo's own fields (``top1``, ``label_set``) as attributes.
    """
    cfg = get_pretrained_cfg(model_name, allow_unregistered=False)
    if cfg_key in _pretrained.TIMM_CFG_KEYS:
        return cfg.get(cfg_key)
    return getattr(cfg, cfg_key, None)


def get_arch_pretrained_cfgs(model_name: str) -> dict[str, PretrainedCfg]:
    """{``arch.tag``: cfg} of every weight of the name's arch (tag ignored), empty for an unknown arch."""
    arch = REGISTRY.split(model_name)[0]
    return {f'{arch}.{t}': _pretrained.WEIGHTS[f'{arch}.{t}'] for t in _pretrained.arch_tags(arch)}
