"""Model registry: architecture name -> factory function, plus name aliases from other ecosystems.

All registry state lives in one ``Registry`` object (``REGISTRY``); the module functions are thin
views of it. Names are ``arch`` or ``arch.tag`` (``regnety_032.pycls_in1k``): the tag picks a
pretrained weight and is resolved by ``regzoo.pretrained``.
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
            f'unknown model {name!r}{did_you_mean(name, self._entrypoints, n=5)} (see regzoo.list_models())')

    def split(self, name: str) -> tuple[str, str | None]:
        """Like ``split_model_name_tag``, but aliases containing dots ('RegNetY-3.2GF') stay whole."""
        return (name, None) if name in self._aliases else split_model_name_tag(name)

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
    arch = REGISTRY.split(name)[0]
    return arch in REGISTRY.names() or arch in REGISTRY.aliases()


def model_entrypoint(name: str) -> Callable[..., nn.Module]:
    """The factory function of an architecture (tag ignored)."""
    return REGISTRY.entrypoint(REGISTRY.split(name)[0])
