"""Backbone use: pick feature taps by index, describe them without a forward pass, return them as a list.

A RegNet has one tap per trunk module listed in ``model.feature_info``: the stem (index 0, stride 2)
and each stage s1..sN (indices 1..N). ``FeatureListNet`` keeps the trunk up to the deepest requested
tap under the model's own module names, so its state-dict keys equal timm's ``features_only`` model
and checkpoints move between the two unchanged. Weights are loaded into the full model *before*
wrapping (see ``builder.build_regnet``), so ``features_only`` works with any checkpoint.

Unlike timm (#1848, #2242, PR #2239), out-of-range indices raise, negative indices count from the
last tap, and the outputs come back in the order requested.
"""
# No ``from __future__ import annotations``: torch.fx copies a traced ``forward``'s annotations into the code it
# generates, and strings there make torch.jit.script of the traced wrapper fail (see regzoo/models/regnet.py).

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import torch
import torch.nn as nn

OutIndices = int | Sequence[int] | None


def _check_index_type(value, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f'{what}: {value!r} is not an int')


def _absolute_indices(indices: Sequence[int], num_taps: int, what: str) -> list[int]:
    """Negative indices count from the end; anything outside [-num_taps, num_taps) raises."""
    if isinstance(indices, (str, bytes)) or not isinstance(indices, Sequence):
        raise TypeError(f'{what}={indices!r} is invalid: expected an int or a sequence of ints')
    if not indices:
        raise ValueError(f'{what}={indices!r} is empty: name at least one tap')
    out = []
    for i in indices:
        _check_index_type(i, what)
        if not -num_taps <= i < num_taps:
            raise ValueError(
                f'{what}={tuple(indices)!r}: index {i} is out of range; valid indices are 0..{num_taps - 1} '
                f'(or -{num_taps}..-1 counting from the last tap)')
        out.append(i % num_taps)
    return out


def _last_n(n: int, num_taps: int, what: str) -> list[int]:
    if not 0 < n <= num_taps:
        raise ValueError(f'{what}={n}: taking the last n taps needs 1 <= n <= {num_taps}')
    return list(range(num_taps - n, num_taps))


def feature_take_indices(num_taps: int, indices: OutIndices = None, what: str = 'indices') -> tuple[list[int], int]:
    """timm's semantics: None -> every tap; int n -> the last n; a sequence -> those (negatives from the end).

    Returns (absolute indices, the deepest one). Used by ``RegNet.forward_intermediates``.
    """
    if indices is None:
        take = list(range(num_taps))
    elif isinstance(indices, int) and not isinstance(indices, bool):
        take = _last_n(indices, num_taps, what)
    else:
        take = _absolute_indices(indices, num_taps, what)
    return take, max(take)


def resolve_out_indices(out_indices: OutIndices, num_taps: int) -> tuple[int, ...]:
    """``out_indices`` for ``features_only`` as absolute indices, in the requested order.

    None -> every tap; int n -> the last n taps (timm); a sequence -> those taps. Repeated taps raise:
    ``(4, -1)`` is almost certainly a mistake in a tap list.
    """
    take, _ = feature_take_indices(num_taps, out_indices, 'out_indices')
    if len(set(take)) != len(take):
        raise ValueError(f'out_indices={tuple(out_indices)!r} names a tap more than once (as {tuple(take)})')
    return tuple(take)


@dataclass(frozen=True)
class FeatureInfo:
    """Channels, reduction (stride) and module of every tap, and which taps are selected.

    Accessors follow timm's ``FeatureInfo``: with ``idx=None`` they answer for the selected taps
    (in output order), with an int for that tap, with a list for each listed tap.
    """
    taps: tuple[Mapping, ...]     # per tap: num_chs, reduction, module, index
    out_indices: tuple[int, ...]

    @classmethod
    def from_model(cls, feature_info: Sequence[Mapping], out_indices: OutIndices = None) -> 'FeatureInfo':
        taps = tuple(MappingProxyType(dict(fi, index=i)) for i, fi in enumerate(feature_info))
        return cls(taps, resolve_out_indices(out_indices, len(taps)))

    def get(self, key: str, idx: int | Sequence[int] | None = None):
        if idx is None:
            return [self.taps[i][key] for i in self.out_indices]
        if isinstance(idx, int):
            return self.taps[idx][key]
        return [self.taps[i][key] for i in idx]

    def get_dicts(self, keys: Sequence[str] | None = None, idx: int | Sequence[int] | None = None):
        def pick(i: int) -> dict:
            return dict(self.taps[i]) if keys is None else {k: self.taps[i][k] for k in keys}
        if isinstance(idx, int):
            return pick(idx)
        return [pick(i) for i in (self.out_indices if idx is None else idx)]

    def channels(self, idx: int | Sequence[int] | None = None):
        return self.get('num_chs', idx)

    def reduction(self, idx: int | Sequence[int] | None = None):
        return self.get('reduction', idx)

    def module_name(self, idx: int | Sequence[int] | None = None):
        return self.get('module', idx)

    def __getitem__(self, i: int) -> dict:
        return dict(self.taps[i])

    def __len__(self) -> int:
        return len(self.taps)


class FeatureListNet(nn.Module):
    """The trunk of ``model`` up to its deepest requested tap; ``forward`` returns the tapped maps as a list.

    ``model`` must list its trunk modules, in execution order, as direct children named in
    ``model.feature_info`` (RegNet: stem, s1..sN). The wrapper scripts with ``torch.jit.script``.
    """

    def __init__(self, model: nn.Module, out_indices: OutIndices = None):
        super().__init__()
        self.feature_info = FeatureInfo.from_model(model.feature_info, out_indices)
        self.out_indices: list[int] = list(self.feature_info.out_indices)
        self.pretrained_cfg = getattr(model, 'pretrained_cfg', None)
        self.default_cfg = self.pretrained_cfg  # timm's older name, the same object (create_model sets both)
        children = dict(model.named_children())
        names = self.feature_info.module_name(list(range(max(self.out_indices) + 1)))
        missing = [n for n in names if n not in children]
        if missing:
            raise ValueError(f'feature_info names {missing}, which are not direct children of {type(model).__name__}')
        for name in names:
            self.add_module(name, children[name])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Checkpoint every block of the kept stages (the stem is never checkpointed: the input needs no grad)."""
        for module in self.children():
            if hasattr(module, 'grad_checkpointing'):
                module.grad_checkpointing = enable

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps: dict[int, torch.Tensor] = {}
        for i, module in enumerate(self.children()):
            x = module(x)
            if i in self.out_indices:
                taps[i] = x
        return [taps[i] for i in self.out_indices]


def _out_keys(out_indices: Sequence[int], out_map: Sequence | None) -> list[str]:
    """The dict keys of the taps: str(tap index) as timm, or ``out_map``'s (one per tap, in the order requested)."""
    if out_map is None:
        return [str(i) for i in out_indices]
    if isinstance(out_map, (str, bytes)) or len(out_map) != len(out_indices):
        raise ValueError(f'out_map={out_map!r} must name each of the {len(out_indices)} taps {tuple(out_indices)}')
    keys = [str(k) for k in out_map]
    if len(set(keys)) != len(keys):
        raise ValueError(f'out_map={out_map!r} repeats a key')
    return keys


class FeatureDictNet(FeatureListNet):
    """``FeatureListNet`` whose ``forward`` returns {key: map} (timm's ``feature_cls='dict'``).

    Keys are ``str(tap index)`` as timm (``'1'``, ``'2'``, ...) or ``out_map``'s, in the order requested.
    The kept trunk and its state dict are ``FeatureListNet``'s; it scripts with ``torch.jit.script``.
    """

    def __init__(self, model: nn.Module, out_indices: OutIndices = None, out_map: Sequence | None = None):
        super().__init__(model, out_indices)
        self.out_keys: list[str] = _out_keys(self.out_indices, out_map)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        taps: dict[int, torch.Tensor] = {}
        for i, module in enumerate(self.children()):
            x = module(x)
            if i in self.out_indices:
                taps[i] = x
        out: dict[str, torch.Tensor] = {}
        for i, key in zip(self.out_indices, self.out_keys):
            out[key] = taps[i]
        return out


class FeatureGetterNet(nn.Module):
    """The whole model as ``self.model``; ``forward`` returns its ``forward_intermediates`` taps as a list
    (timm's ``feature_cls='getter'``), in the order requested.

    With ``prune`` (default, as timm) the stages after the deepest tap and the head are cut first
    (``model.prune_intermediate_layers``). State-dict keys carry the ``model.`` prefix, as timm's.
    ``forward_intermediates`` is Python-only (``torch.jit.ignore``), so this wrapper does not script.
    """

    def __init__(self, model: nn.Module, out_indices: OutIndices = None, prune: bool = True):
        super().__init__()
        self.feature_info = FeatureInfo.from_model(model.feature_info, out_indices)
        self.out_indices: list[int] = list(self.feature_info.out_indices)
        self.pretrained_cfg = getattr(model, 'pretrained_cfg', None)
        self.default_cfg = self.pretrained_cfg
        self._depth_order: list[int] = sorted(self.out_indices)
        if prune and hasattr(model, 'prune_intermediate_layers'):
            model.prune_intermediate_layers(self._depth_order, prune_head=True)
        self.model = model

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = self.model.forward_intermediates(x, indices=self._depth_order, intermediates_only=True)
        by_index = dict(zip(self._depth_order, taps))
        return [by_index[i] for i in self.out_indices]


class FeatureGraphNet(nn.Module):
    """The taps through torchvision's fx ``create_feature_extractor`` (timm's ``feature_cls='fx'``); a list out.

    ``self.graph_module`` is the traced trunk up to the deepest tap (its state-dict keys carry the
    ``graph_module.`` prefix, as timm's). Needs torchvision.
    """

    def __init__(self, model: nn.Module, out_indices: OutIndices = None):
        super().__init__()
        from torchvision.models.feature_extraction import create_feature_extractor

        self.feature_info = FeatureInfo.from_model(model.feature_info, out_indices)
        self.out_indices: list[int] = list(self.feature_info.out_indices)
        self.pretrained_cfg = getattr(model, 'pretrained_cfg', None)
        self.default_cfg = self.pretrained_cfg
        self.out_keys: list[str] = _out_keys(self.out_indices, None)
        return_nodes = dict(zip(self.feature_info.module_name(), self.out_keys))
        self.graph_module = create_feature_extractor(model, return_nodes)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = self.graph_module(x)
        return [out[k] for k in self.out_keys]
