"""Model registry: architecture name -> factory function, plus name aliases from other ecosystems.

All registry state lives in one ``Registry`` object (``REGISTRY``); the module functions are thin
views of it. Names are ``arch`` or ``arch.tag`` (``regnety_032.pycls_in1k``): the tag picks a
pretrained weight and is resolved by ``regzoo.pretrained``.
"""
from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Callable, Iterable

import torch.nn as nn


def split_model_name_tag(name: str) -> tuple[str, str | None]:
    """'regnety_032.pycls_in1k' -> ('regnety_032', 'pycls_in1k'); no tag -> (name, None)."""
    arch, _, tag = name.partition('.')
    return arch, tag or None


def natural_key(name: str) -> list:
    """Sort key that orders embedded numbers numerically ('regnety_2560' after 'regnety_320')."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r'(\d+)', name)]


def close_matches(name: str, candidates: Iterable[str], n: int = 5) -> list[str]:
    candidates = list(candidates)
    matches = difflib.get_close_matches(name, candidates, n=n, cutoff=0.6)
    # prefix matches first: 'regnety_03' should offer 'regnety_032' before 'regnety_320'
    prefixed = [c for c in sorted(candidates, key=natural_key) if c.startswith(name) and c not in matches]
    return (prefixed + matches)[:n]


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
        hint = close_matches(name, self._entrypoints)
        raise ValueError(
            f'unknown model {name!r}' + (f'; did you mean {", ".join(map(repr, hint))}?' if hint else '')
            + " (see regzoo.list_models())")

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
        from .pretrained import list_pretrained
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


def create_model(
        model_name: str, pretrained: bool = False, num_classes: int | None = None, in_chans: int | None = None,
        **kwargs,
) -> nn.Module:
    """Build a registered model by name.

    Args:
        model_name: ``arch`` or ``arch.tag``, e.g. ``regnety_032`` or ``regnety_032.pycls_in1k``;
            aliases such as ``regnet_y_3_2gf`` or ``RegNetY-3.2GF`` work too.
        pretrained: load the tag's weights (the arch's default tag when none is given).
        num_classes: classifier outputs (default: the weight's, else 1000); 0 removes the classifier.
        in_chans: input channels (default 3); pretrained first convs are adapted.
        **kwargs: ``checkpoint_path``, ``pretrained_cfg_overlay``, ``features_only``, ``out_indices``,
            ``output_stride``, ``global_pool``, ``drop_rate``, ``drop_path_rate``, ``zero_init_last``,
            or any ``RegNetCfg`` field to override the architecture. Anything else raises.
    """
    arch, tag = REGISTRY.split(model_name)
    fn = REGISTRY.entrypoint(arch)
    if num_classes is not None:
        kwargs['num_classes'] = num_classes
    if in_chans is not None:
        kwargs['in_chans'] = in_chans
    return fn(pretrained=pretrained, pretrained_tag=tag, **kwargs)
