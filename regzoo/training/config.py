"""The run config: every setting of a training run, resolved once, then read-only.

``parse_args`` and ``resolve_args`` give the flags (with lr, warmup lr and the global batch worked out); the
rest is known only once the data and the starting weight are read (the number of classes, the train size
and the eval data config). ``RunConfig.create`` takes both, and nothing changes a RunConfig afterwards: the
steps of a run (setup, restore, epochs, saves) read it, none writes it.
"""
from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any


def _frozen(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, Mapping):
        return MappingProxyType({k: _frozen(v) for k, v in value.items()})
    return value


def plain(value: Any) -> Any:
    """Tuples as lists and mappings as dicts: what YAML and ``torch.load(weights_only=True)`` take."""
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class RunConfig:
    """The settings of a run by flag name (``cfg.lr``, ``cfg.batch_size``...) plus the derived ones
    (``world_size``, ``global_batch_size``, ``lr_source``, ``num_classes``, ``train_size``, ``data_config``).

    The flags are the parser's (``regzoo.training.args``), kept in one mapping rather than copied into fields
    here, so a new flag needs no second definition. Lists are tuples and dicts read-only mappings.
    """
    values: Mapping[str, Any]

    @classmethod
    def create(cls, args: argparse.Namespace | Mapping[str, Any], **derived: Any) -> RunConfig:
        """The config of ``args`` (a resolved Namespace or a dict of one) with ``derived`` settings added."""
        values = {**(vars(args) if isinstance(args, argparse.Namespace) else dict(args)), **derived}
        return cls(MappingProxyType({k: _frozen(v) for k, v in sorted(values.items())}))

    def __getattr__(self, name: str) -> Any:  # only called for names that are not attributes
        if name.startswith('__') or name == 'values':
            raise AttributeError(name)
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(f'RunConfig has no setting {name!r}') from None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (lists, dicts) for args.yaml and the training state."""
        return {k: plain(v) for k, v in self.values.items()}
