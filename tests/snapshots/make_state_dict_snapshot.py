"""Regenerate state_dict_keys.json from timm's RegNets (the reference), not from regzoo.

    python tests/snapshots/make_state_dict_snapshot.py

Each arch maps to the number of state-dict entries and the sha256 of its 'key shape' lines;
the two smallest archs are also listed in full so a reader can see the naming scheme. An arch timm does
not register (regnety_10b, SEER's 10B model) is timm's RegNet class at that arch's design point.
"""
import hashlib
import json
from pathlib import Path

import timm
import torch

SNAPSHOT = Path(__file__).with_name('state_dict_keys.json')
LISTED = ('regnetx_002', 'regnety_002')


def key_shape_lines(model: torch.nn.Module) -> list[str]:
    return [f'{k} {tuple(v.shape)}' for k, v in model.state_dict().items()]


def digest(lines: list[str]) -> dict:
    return dict(count=len(lines), sha256=hashlib.sha256('\n'.join(lines).encode()).hexdigest())


def timm_model(name: str) -> torch.nn.Module:
    """timm's model of ``name``; for an arch timm lacks, timm's RegNet at regzoo's (w0, wa, wm, ...) for it."""
    if timm.is_model(name):
        return timm.create_model(name)
    import dataclasses

    from timm.models.regnet import RegNet, RegNetCfg

    from regzoo import MODEL_CFGS
    ours = MODEL_CFGS[name]
    shared = {f.name for f in dataclasses.fields(RegNetCfg)} & {f.name for f in dataclasses.fields(ours)}
    return RegNet(RegNetCfg(**{k: getattr(ours, k) for k in shared}, act_layer=ours.act, norm_layer=ours.norm))


def main(names: list[str]) -> None:
    out = {'archs': {}, 'listed': {}}
    for name in names:
        with torch.device('meta'):
            lines = key_shape_lines(timm_model(name))
        out['archs'][name] = digest(lines)
        if name in LISTED:
            out['listed'][name] = lines
    SNAPSHOT.write_text(json.dumps(out, indent=1) + '\n')


if __name__ == '__main__':
    import regzoo
    main(regzoo.list_models())
