"""Regenerate state_dict_keys.json from timm's RegNets (the reference), not from regzoo.

    python tests/snapshots/make_state_dict_snapshot.py

Each arch maps to the number of state-dict entries and the sha256 of its 'key shape' lines;
the two smallest archs are also listed in full so a reader can see the naming scheme.
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


def main(names: list[str]) -> None:
    out = {'archs': {}, 'listed': {}}
    for name in names:
        with torch.device('meta'):
            lines = key_shape_lines(timm.create_model(name))
        out['archs'][name] = digest(lines)
        if name in LISTED:
            out['listed'][name] = lines
    SNAPSHOT.write_text(json.dumps(out, indent=1) + '\n')


if __name__ == '__main__':
    import regzoo
    main(regzoo.list_models())
