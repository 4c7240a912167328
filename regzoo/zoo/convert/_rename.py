"""Key renaming shared by the converters: ordered (regex, replacement) rules, every key must match one."""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import torch

Rule = tuple[str, str]


def rename_keys(state_dict: Mapping[str, torch.Tensor], rules: Iterable[Rule], source: str) -> dict[str, torch.Tensor]:
    """Apply the first matching rule to each key (``re.fullmatch``); a key no rule matches raises.

    Raising instead of passing unknown keys through is deliberate: a silently kept foreign key only
    surfaces later as a confusing 'unexpected key' far from the converter that should have known it.
    """
    compiled = [(re.compile(pattern), repl) for pattern, repl in rules]
    out, unknown = {}, []
    for key, value in state_dict.items():
        for pattern, repl in compiled:
            if pattern.fullmatch(key):
                out[pattern.sub(repl, key)] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(
            f'{source} checkpoint: {len(unknown)} key(s) have no regzoo equivalent, e.g. {unknown[:5]}; '
            'is it a RegNet checkpoint of this layout?')
    return out


# the BatchNorm entries every norm layer carries, written as one regex group
BN = r'(weight|bias|running_mean|running_var|num_batches_tracked)'


def in_blocks(rules: Iterable[Rule], marker: str = '') -> tuple[Rule, ...]:
    """Lift in-block rules ('f.a.weight' -> 'conv1.conv.weight') to whole keys under ``s{i}.b{j}.[marker.]``.

    The block prefix becomes group 1, so the rule's own group references shift up by one.
    """
    def shift(repl: str) -> str:
        return re.sub(r'\\(\d)', lambda m: '\\' + str(int(m[1]) + 1), repl)
    lead = re.escape(marker + '.') if marker else ''
    return tuple((rf'(s\d+\.b\d+)\.{lead}{pattern}', rf'\1.{shift(repl)}') for pattern, repl in rules)
