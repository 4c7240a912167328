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

import torch.nn as nn

from regzoo.utils.names import did_you_mean, natural_key, split_model_name_tag
from regzoo.zoo.pretrained import list_pretrained


class Registry:
    """Architecture name -> factory, and alias -> architecture name. Duplicates raise."""

    def __init__(self):
        self._entrypoints: dict[str, Callable[..., nn.Module]] = {}
        self._aliases: dict[str, str] = {}

    def register(self, fn: Callable[..., nn.Module], name: str | None = None) -> Callable[..., nn.Module]:
        name = name or fn.__name__
        if name in self._entrypoints or name in self._aliases:
            raise ValueError(f'a model named {name!r} is already registered')
        self._entrypoints[name] = fn
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
        raise ValueError(
            f'unknown model {name!r}{did_you_mean(name, [*self._entrypoints, *self._aliases], n=5)} '
            '(see regzoo.list_models())')

    def unregister(self, name: str) -> None:
        """Remove an architecture and its aliases (for throwaway models in notebooks and tests)."""
        if name not in self._entrypoints:
            raise ValueError(f'no architecture named {name!r} is registered; unregister takes an arch, not an alias')
        del self._entrypoints[name]
        self._aliases = {alias: arch for alias, arch in self._aliases.items() if arch != name}

    def split(self, name: str) -> tuple[str, str | None]:
        """``name`` -> (registered arch, tag or None): 'RegNetY-3.2GF.ra_in1k' -> ('regnety_032', 'ra_in1k').

        Aliases may contain dots, so the split is not at the first dot: the longest registered name or
        alias that is all of ``name``, or is followed by '.' and a tag, wins. An unknown name splits at
        its first dot (``split_model_name_tag``) and stays as typed, for ``resolve`` to name in its error.
        """
        known = {**self._aliases, **{arch: arch for arch in self._entrypoints}}
        if name in known:
            return known[name], None
        prefixes = [k for k in known if name.startswith(k + '.')]
        if prefixes:
            prefix = max(prefixes, key=len)
            return known[prefix], name[len(prefix) + 1:] or None
        return split_model_name_tag(name)

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

    def aliases(self) -> dict[str, str]:
        return dict(self._aliases)


REGISTRY = Registry()


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: register ``fn`` under its ``__name__``."""
    return REGISTRY.register(fn)


def _matches(name: str, patterns: str | Iterable[str]) -> bool:
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def list_models(
        filter: str | Iterable[str] = '', pretrained: bool = False, exclude_filters: str | Iterable[str] = (),
) -> list[str]:
    """Registered names matching the fnmatch ``filter`` (naturally sorted).

    With ``pretrained=True`` the names are the ``arch.tag`` of every known weight instead.
    """
    if pretrained:
        names = list_pretrained()
    else:
        names = REGISTRY.names()
    if filter:
        names = [n for n in names if _matches(n, filter)
                 or (pretrained and _matches(split_model_name_tag(n)[0], filter))]
    if exclude_filters:
        names = [n for n in names if not _matches(n, exclude_filters)]
    return sorted(names, key=natural_key)


def is_model(name: str) -> bool:
    """True for a registered architecture or alias (a tag, if any, is ignored)."""
    return REGISTRY.split(name)[0] in REGISTRY.names()


def model_entrypoint(name: str) -> Callable[..., nn.Module]:
    """The factory function of an architecture (tag ignored)."""
    return REGISTRY.entrypoint(REGISTRY.split(name)[0])
